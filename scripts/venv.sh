# Sourced by ./run and ./test: make .venv (Python 3.10 or newer) and install the requirements
# file $1 into it, unless the same files were installed already (a stamp of their sha256).
requirements="$1"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(basename "$requirements" .txt)"
want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing $requirements into .venv (first time: several minutes) ..." >&2
  .venv/bin/python -m pip install -q -r "$requirements"
  echo "$want" > "$stamp"
fi

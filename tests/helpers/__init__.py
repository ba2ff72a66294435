"""What test modules share (a test module never imports another test module), by subject:

- ``app``: the repository's ``ROOT`` and ``EXAMPLES``, the real app served in-process
  (``running_app``, ``free_port``), a Chromium page on it (``chromium_page``,
  ``wait_for_result_or_error``), and the argument lists clients send (``variation_args``,
  ``control_args``, ``endpoint_calls``) with ``pictures`` to read an endpoint's output.
- ``shared``: the material in ``../shared`` (``shared_dir``, ``shared_file``, ``missing_fixture``).
- ``models``: tiny model files and registries (IP-Adapter, few-step LoRAs, fake detector weights,
  two ControlNets, a UNet that runs out of memory).
- ``cli``: in-process runs of the command line (``TINY``, ``run``, ``pixels``).
- ``diffusers_export``: ``prompt-free export`` on the tiny profile (``export_tiny``), diffusers'
  pipelines loaded from its base folder (``base_pipeline``), ``small_references``.
- ``tensors``: ``one_thread`` (an autouse fixture to import) and ``rel``.
- ``lora_files``: LoRA files in the kohya and PEFT layouts.
- ``uploads``: odd and broken image files for the upload tests.
"""

"""The app as API clients and users reach it: gradio_client against the in-process server, and a real browser."""

"""The CPU speed wing, ComfyUI side: layer classes computing on oneDNN (``operations``), module variants
swapped in when a network is built with them (``swaps``), and one text row shared by all views
(``shared_text``). Chosen by the builders in ``nodes/model_loading.py``; the model never names any of it,
and on a GPU none of it is installed."""

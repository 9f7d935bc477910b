"""Serving the models: the embedded llama.cpp servers, vLLM's server, the Hugging Face export both read, LoRA
conversion for llama.cpp, the adapters trained here for the embedded model (``trained``), and the stand-in server
the tests talk to. Core level: it never imports the programs."""

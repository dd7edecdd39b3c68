"""The end-to-end demo: the recipe of commands, the step runner that skips finished steps, the
prompts, and the report of how well the audio follows them."""

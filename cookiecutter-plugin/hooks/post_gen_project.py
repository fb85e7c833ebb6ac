"""Remove the files of the component kinds that were not chosen (runs inside the new project)."""

from pathlib import Path

MODULE = {{ cookiecutter.__module | tojson }}
CHOSEN = {
    "loss": {{ 'True' if cookiecutter.include_loss else 'False' }},
    "advantage": {{ 'True' if cookiecutter.include_advantage else 'False' }},
    "sampler": {{ 'True' if cookiecutter.include_sampler else 'False' }},
    "reward": {{ 'True' if cookiecutter.include_reward else 'False' }},
}

for kind, chosen in CHOSEN.items():
    if not chosen:
        Path("src", MODULE, f"{kind}.py").unlink()
        Path("tests", f"test_{kind}.py").unlink()

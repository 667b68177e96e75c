"""The project's packaging stays consistent: pyproject, environment.yml, README and CI agree."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_names_every_pyproject_dependency():
    project = pyproject()
    wanted = {requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {requirement_name(r) for r in extra if not r.startswith("minimagen")}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    names = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        names |= {requirement_name(d) for d in items}
    names = {"torch" if n == "pytorch" else n for n in names}  # conda-forge calls it pytorch
    assert wanted <= names, f"environment.yml lacks {sorted(wanted - names)}"


def test_requirements_are_ranges_that_torch_2_13_satisfies():
    for req in pyproject()["dependencies"]:
        assert "==" not in req, f"{req}: use a range, not a pin"
    torch_req = next(r for r in pyproject()["dependencies"] if requirement_name(r) == "torch")
    low = tuple(int(p) for p in re.search(r">=([\d.]+)", torch_req).group(1).split("."))
    assert low <= (2, 13, 0) and "<" not in torch_req


def test_ci_runs_the_readme_commands():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme.split("## ", 2)[1], flags=re.S)[0].splitlines()
    commands = [c for c in commands if c and not c.startswith("#")]
    assert len(commands) == 2, "the README opens with exactly two commands"
    for command in commands:
        assert command.replace("pip install", "python -m pip install --quiet").replace("pytest", "python -m pytest") in ci

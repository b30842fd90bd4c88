"""The shipped recipes (``zolightning/recipes.py``): listed, named from any directory, and present in a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zolightning.cli import DEFAULT_CONFIG, main
from zolightning.recipes import RECIPES, RecipeNotFound, format_recipes, recipe_summaries, resolve_recipe, with_recipes

REPO = Path(__file__).resolve().parent.parent


def test_the_repositorys_configs_folder_is_the_packages_one_copy():
    # One copy of each file: `configs/` (what the README and the tests name) links to the package's folder.
    assert (REPO / "configs").resolve() == RECIPES and DEFAULT_CONFIG.is_file()
    assert (REPO / "configs" / "smoke.yaml").read_bytes() == (RECIPES / "smoke.yaml").read_bytes()


def test_a_bare_name_is_the_shipped_recipe_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("llm_mezo_bcd") == str(RECIPES / "llm_mezo_bcd.yaml")
    assert resolve_recipe("smoke.yaml") == str(RECIPES / "smoke.yaml")
    (tmp_path / "smoke.yaml").write_text("seed_everything: 1\n")
    assert resolve_recipe("smoke.yaml") == "smoke.yaml"  # a file of that name here wins
    assert resolve_recipe("runs/mine.yaml") == "runs/mine.yaml"  # a path is left to the parser
    assert resolve_recipe("{trainer: {max_steps: 1}}") == "{trainer: {max_steps: 1}}"  # so is inline YAML
    assert with_recipes(["fit", "--config", "mezo", "-c=lozo", "--trainer.max_steps", "3"]) == [
        "fit", "--config", str(RECIPES / "mezo.yaml"), f"-c={RECIPES / 'lozo.yaml'}", "--trainer.max_steps", "3"
    ]


def test_a_missing_recipe_lists_the_recipes_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeNotFound, match=r"no shipped recipe 'smoek' \(did you mean 'smoke'\?\)\. The recipes are"):
        resolve_recipe("smoek")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "nothing_like_it"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no shipped recipe 'nothing_like_it'" in err and "llm_mezo_bcd" in err and len(err.splitlines()) == 1


def test_recipes_lists_every_recipe_with_its_first_comment_line(capsys):
    assert main(["recipes"]) is None
    out = capsys.readouterr().out
    summaries = recipe_summaries()
    assert set(summaries) == {path.stem for path in RECIPES.glob("*.yaml")} and "smoke" in summaries
    assert summaries["llm_zero_shot"] == "Zero-shot: the pretrained model with the prompt, no training (max_steps 0)."
    assert summaries["lezo"].endswith("…")  # the comment's sentence goes on
    smoke = next(line for line in out.splitlines() if line.startswith("smoke "))
    assert "A seconds-long end-to-end run" in smoke and out == format_recipes() + "\n"


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
    return done


def test_a_wheel_install_ships_the_recipes_and_runs_them_from_any_directory(tmp_path):
    # Built from a copy of the sources, so that the build leaves nothing in the repository.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("zolightning", "callbacks"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)], tmp_path,
        env)
    (wheel,) = (tmp_path / "dist").glob("zolightning-*.whl")
    target = tmp_path / "installed"
    run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)], tmp_path, env)
    assert sorted(p.name for p in (target / "zolightning" / "configs").glob("*.yaml")) == sorted(
        p.name for p in RECIPES.glob("*.yaml")
    )
    # The installed copy comes first on the path (before this environment's editable install), run from elsewhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(target)
    script = str(target / "bin" / "zolightning")
    where = run([sys.executable, "-c", "import zolightning.cli as c; print(c.__file__, c.DEFAULT_CONFIG.is_file())"],
                elsewhere, env).stdout.split()
    assert where == [str(target / "zolightning" / "cli.py"), "True"]  # `zolightning fit` alone finds the demo
    listed = run([script, "recipes"], elsewhere, env).stdout
    assert "llm_mezo_bcd" in listed and str(target / "zolightning" / "configs") in listed
    fit = run([script, "fit", "--config", "smoke", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0"],
              elsewhere, env)
    assert "Held-out test accuracy" in fit.stdout and "after 2 steps" in fit.stdout
    assert (elsewhere / "runs" / "smoke" / "version_0").is_dir()

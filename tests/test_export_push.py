"""tools/export_hf.py --push_to_hub / --dry_run, with huggingface_hub's HfApi replaced (no network here)."""

import importlib.util
import os

import huggingface_hub
import pytest

from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset
from mmjax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_hf = _tool("export_hf")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = Qwen2_5_VL.from_config(preset("tiny"), seed=1)
    path = str(tmp_path_factory.mktemp("ckpt") / "model")
    return checkpoints.save_model(path, model.params, model.config)


class FakeHfApi:
    """Records calls; snapshots the folder at upload time, as the hub would receive it."""
    calls: list = []

    def __init__(self, *args, **kwargs):
        FakeHfApi.calls.append(("init", args, kwargs))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, **kwargs):
        kwargs["uploaded"] = export_hf.folder_files(kwargs["folder_path"])
        FakeHfApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


def _written_files(folder) -> list[tuple[str, int]]:
    return sorted((n, os.path.getsize(os.path.join(folder, n))) for n in os.listdir(folder))


def test_dry_run_lists_every_exported_file_and_uploads_nothing(ckpt, tmp_path, fake_hub, capsys):
    out = str(tmp_path / "hf")
    export_hf.main(["--ckpt", ckpt, "--out", out, "--no_progress", "--push_to_hub", "me/tiny", "--dry_run"])
    files = _written_files(out)
    assert {"model.safetensors", "config.json", "generation_config.json"} <= {n for n, _ in files}
    listed = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].replace(",", "").isdigit():
            listed[parts[1]] = int(parts[0].replace(",", ""))
    assert listed == dict(files)  # every file, with its size
    assert fake_hub.calls == []


def test_push_uploads_the_export_folder_to_the_repo(ckpt, tmp_path, fake_hub, capsys):
    out = str(tmp_path / "hf")
    export_hf.main(["--ckpt", ckpt, "--out", out, "--no_progress", "--push_to_hub", "me/tiny", "--private"])
    names = [c[0] for c in fake_hub.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    _, repo_id, create_kw = fake_hub.calls[1]
    assert repo_id == "me/tiny" and create_kw["exist_ok"] is True and create_kw["private"] is True
    upload = fake_hub.calls[2][1]
    assert upload["repo_id"] == "me/tiny" and upload["repo_type"] == "model"
    assert os.path.realpath(upload["folder_path"]) == os.path.realpath(out)
    assert upload["uploaded"] == _written_files(out)  # the complete export, not a temp folder
    assert "pushed to https://hub.example/me/tiny" in capsys.readouterr().out


def test_upload_failure_is_one_line_and_keeps_the_export(ckpt, tmp_path, monkeypatch):
    class Offline(FakeHfApi):
        def create_repo(self, repo_id, **kwargs):
            # what an offline machine gets: a connection error of the hub's HTTP client, not an OSError
            raise huggingface_hub.errors.HTTPError("Temporary failure in name resolution")
    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    out = str(tmp_path / "hf")
    with pytest.raises(SystemExit, match=r"export_hf: error: push of .* to me/tiny failed .*name resolution"):
        export_hf.main(["--ckpt", ckpt, "--out", out, "--no_progress", "--push_to_hub", "me/tiny"])
    assert "model.safetensors" in os.listdir(out)


def test_bad_repo_id_fails_before_exporting(ckpt, tmp_path, fake_hub):
    out = tmp_path / "hf"
    with pytest.raises(SystemExit, match="export_hf: error: Repo id must be"):
        export_hf.main(["--ckpt", ckpt, "--out", str(out), "--no_progress", "--push_to_hub", "not a//repo"])
    assert not out.exists() and fake_hub.calls == []


def test_dry_run_needs_push_to_hub(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_hf.main(["--ckpt", ckpt, "--out", str(tmp_path / "hf"), "--dry_run"])
    assert e.value.code == 2 and "--dry_run and --private need --push_to_hub" in capsys.readouterr().err


def test_plain_export_does_not_touch_the_hub(ckpt, tmp_path, fake_hub):
    out = str(tmp_path / "hf")
    export_hf.main(["--ckpt", ckpt, "--out", out, "--no_progress"])
    assert "model.safetensors" in os.listdir(out) and fake_hub.calls == []

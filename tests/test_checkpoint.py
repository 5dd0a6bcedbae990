"""Checkpoints: HF-loadable folders, atomic writes, and resume reproducing an uninterrupted run."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from tests.cli import TINY, metrics, run_cli
from train.checkpoint import latest_checkpoint, list_checkpoints


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_cache):
    """4 steps, checkpoints at 2 and 4: the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("ckpt")
    run_dir = root / "run"
    run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY,
                           "trainer.total_steps=4", "trainer.save_every=2", "eval.after_train=false"], cwd=root)
    return root, run_dir


def _weights(folder):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def test_checkpoints_load_with_transformers(trained_run):
    root, run_dir = trained_run
    steps = [step for step, _ in list_checkpoints(run_dir)]
    assert steps == [2, 4]
    base = (run_dir / "run.json").exists() and json.loads((run_dir / "run.json").read_text())["base_model"]
    for step, folder in list_checkpoints(run_dir):
        meta = json.loads((folder / "rlvr_checkpoint.json").read_text())
        assert meta["step"] == step and "train/reward_mean" in meta["metrics"]
        assert meta["config"]["trainer"]["total_steps"] == 4
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.decode(tokenizer("12+34=").input_ids, skip_special_tokens=True) == "12+34="
    changed = [not torch.equal(a, b) for a, b in zip(_weights(base).values(), _weights(run_dir / "checkpoints/step_000004").values())]
    assert any(changed), "RL steps left every weight equal to the base"
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_resume_reproduces_the_uninterrupted_run(trained_run, tiny_cache):
    """resume=auto (as a restarted sweep uses) picks up the latest complete checkpoint; a half-written
    checkpoint and a half-written last metrics line are dropped."""
    root, run_dir = trained_run
    crashed = root / "crashed"
    shutil.copytree(run_dir, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_000004")  # as if killed after step 3's log
    (crashed / "checkpoints" / ".tmp-step_000004").mkdir()  # and mid-save
    with (crashed / "metrics.jsonl").open("a") as f:
        f.write('{"train/step": 5, "train/rew')  # and mid-write of a metrics line
    assert latest_checkpoint(crashed)[0] == 2
    proc = run_cli("rlvr-train", [f"run_dir={crashed}", f"model.cache_dir={tiny_cache}", *TINY, "trainer.total_steps=4",
                                  "trainer.save_every=2", "eval.after_train=false", "resume=auto"], cwd=root)
    assert f"{crashed / 'metrics.jsonl'}:5: skipping a truncated last line" in proc.stderr
    reference = {m["train/step"]: m for m in metrics(run_dir)}
    resumed = {m["train/step"]: m for m in metrics(crashed)}
    assert sorted(resumed) == [1, 2, 3, 4]  # no duplicated steps
    for step in (3, 4):
        for key in ("actor/pg_loss", "train/reward_mean", "actor/entropy", "actor/grad_norm"):
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=1e-5, abs=1e-7), (step, key)
    a, b = _weights(run_dir / "checkpoints/step_000004"), _weights(crashed / "checkpoints/step_000004")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert not list((crashed / "checkpoints").glob(".tmp-*"))


def test_existing_run_without_resume_is_refused(trained_run, tiny_cache):
    root, run_dir = trained_run
    proc = run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY], cwd=root, check=False)
    assert proc.returncode == 2
    assert "resume=true" in proc.stderr
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]  # nothing lost


def test_resume_without_checkpoint_is_refused(tmp_path, tiny_cache):
    proc = run_cli("rlvr-train", [f"run_dir={tmp_path / 'empty'}", f"model.cache_dir={tiny_cache}", *TINY,
                                  "resume=true"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "no complete checkpoint" in proc.stderr


def test_ppo_resume_restores_actor_and_critic(tmp_path, tiny_cache):
    """PPO's critic and its optimizer state are part of the checkpoint: a resumed run matches."""
    args = [f"model.cache_dir={tiny_cache}", *TINY, "algorithm=ppo", "trainer.total_steps=4", "trainer.save_every=2",
            "eval.after_train=false"]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_cli("rlvr-train", [f"run_dir={reference}", *args], cwd=tmp_path)
    shutil.copytree(reference, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_000004")
    run_cli("rlvr-train", [f"run_dir={crashed}", *args, "resume=true"], cwd=tmp_path)
    ref_metrics = {m["train/step"]: m for m in metrics(reference)}
    new_metrics = {m["train/step"]: m for m in metrics(crashed)}
    for step in (3, 4):
        for key in ("actor/pg_loss", "critic/vf_loss", "train/advantage_std"):
            assert new_metrics[step][key] == pytest.approx(ref_metrics[step][key], rel=1e-5, abs=1e-7), (step, key)
    for part, cls in (("", AutoModelForCausalLM), ("critic", AutoModelForTokenClassification)):
        a = cls.from_pretrained(reference / "checkpoints/step_000004" / part).state_dict()
        b = cls.from_pretrained(crashed / "checkpoints/step_000004" / part).state_dict()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_pruned_train_states_keep_the_weights_and_refuse_resume_clearly(trained_run, tmp_path):
    """trainer.keep_train_states=1: older checkpoints lose train_state/ (optimizer, RNG), never their weights."""
    from accelerate import Accelerator

    from train.checkpoint import load_training_state, prune_train_states

    _, run_dir = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    pruned = prune_train_states(copy, keep=1)
    assert pruned == [copy / "checkpoints" / "step_000002" / "train_state"]
    assert [step for step, _ in list_checkpoints(copy)] == [2, 4]  # both still evaluable
    assert (copy / "checkpoints" / "step_000004" / "train_state").is_dir()
    _weights(copy / "checkpoints" / "step_000002")  # loads
    with pytest.raises(FileNotFoundError, match="keep_train_states"):
        load_training_state(Accelerator(cpu=True), copy / "checkpoints" / "step_000002")
    assert prune_train_states(copy, keep=1) == []


def test_a_full_disk_during_a_save_names_the_folder_the_free_space_and_the_last_checkpoint(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    """ENOSPC from a writer (the last file of the save) stops the run with the path, the free space and the
    checkpoint to resume from; that checkpoint stays whole and the partial save is gone."""
    import errno

    from accelerate import Accelerator

    import train.checkpoint as checkpoint
    from train.checkpoint import CheckpointSaveError, save_checkpoint

    acc = Accelerator(cpu=True)
    model, optimizer = acc.prepare(tiny_model, torch.optim.AdamW(tiny_model.parameters(), lr=1e-3))
    run_dir = tmp_path / "run"
    first = save_checkpoint(acc, run_dir, 2, model, tiny_tokenizer, {"metrics": {}, "config": {}})
    before = {path.relative_to(first): path.read_bytes() for path in first.rglob("*") if path.is_file()}

    def disk_full(path, payload):
        (path.parent / "partial.bin").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_write_json", disk_full)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the weights of step 4 differ from step 2's
    with pytest.raises(CheckpointSaveError) as caught:
        save_checkpoint(acc, run_dir, 4, model, tiny_tokenizer, {"metrics": {}, "config": {}})
    message = str(caught.value)
    assert f"saving the checkpoint of step 4 into {run_dir / 'checkpoints' / '.tmp-step_000004'} failed: OSError: " \
           "[Errno 28] No space left on device" in message
    assert "free space there: " in message and " MB of " in message
    assert f"last complete checkpoint: {first} (step 2); the partial save was removed" in message
    assert f"then continue with run_dir={run_dir} resume=true" in message
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]
    assert not (run_dir / "checkpoints" / ".tmp-step_000004").exists()
    after = {path.relative_to(first): path.read_bytes() for path in first.rglob("*") if path.is_file()}
    assert after == before  # the previous checkpoint is untouched, byte for byte

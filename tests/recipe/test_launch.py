"""The launcher in-process: one compose, the run directory named from the config, the CPU hand-over, the dry run and
--dump-config, the hand-over to ``main_rpg --resolved``; and ``python -m recipe.rpg.main_rpg`` as typed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from omegaconf import OmegaConf

from recipe.rpg import embedded, launch, progress
from rpg_ext import cpu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_run(monkeypatch, tmp_path):
    """The launcher up to the child process: what it hands over is recorded, nothing trains (the embedded task is the
    shipped one)."""
    calls = []

    def run_and_follow(resolved, log_path, env, total, verbose=False):
        calls.append(dict(resolved=Path(resolved), log_path=Path(log_path), env=env, total=total))
        return 0

    monkeypatch.setattr(progress, "run_and_follow", run_and_follow)
    monkeypatch.setattr("recipe.rpg.tables.cli.main", lambda argv: calls.append(dict(tables=argv)) or 0)
    monkeypatch.setenv(cpu.PLATFORM_ENV, "")  # the launcher sets it for a CPU run; restored after the test
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a launch checks an offline hub cache for the paper's model
    monkeypatch.setattr("rpg_ext.rollouts.vllm_rollout_check", lambda gpu_visible: (True, None))  # a GPU host with vLLM
    return calls


@pytest.fixture
def data_dir(tmp_path):
    for name in ("dapo-math-17k-eng.parquet", "aime2024.parquet", "aime2025.parquet", "amc23.parquet"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_without_gpu_a_launch_runs_the_embedded_cpu_config(tmp_path, monkeypatch, no_run, capsys):
    """No GPU: one compose of the preset with machine=cpu; the preset's algorithm and the command line's overrides
    stay, model and data are the embedded task's (a MODEL override is dropped, and said so); make_tables follows."""
    monkeypatch.setattr(cpu, "gpu_visible", lambda: False)
    run_dir = tmp_path / "run"
    env = {"KL": "ufkl", "KL_BETA": "0.01", "CLIP": "0.1,0.1", "REFERENCE": "periodic", "REFERENCE_EVERY": "2",
           "STEPS": "3", "MODEL": "/nowhere/model", "RUN_DIR": str(run_dir), "DATA_DIR": str(tmp_path / "none")}
    assert launch.main(["method=grpo_corrected", "algorithm.rpg.kl.beta=0.02"], env=env) == 0
    child, tables = no_run
    cfg = OmegaConf.load(child["resolved"])
    assert child["resolved"] == run_dir / "resolved_config.yaml" and child["log_path"].parent == run_dir / "logs"
    # the machine: verl's cpu platform, the hf rollout, the embedded model and data
    assert cfg.trainer.device == "cpu" and cfg.actor_rollout_ref.rollout.name == "hf"
    assert cfg.actor_rollout_ref.model.path == str(embedded.task_dir() / "model")
    assert cfg.data.train_files == str(embedded.task_dir() / "train.parquet")
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu" and os.environ["VERL_PLATFORM"] == "cpu"
    # the preset's algorithm, the variables and the command line (last)
    a = cfg.algorithm
    assert (a.policy_loss, a.rpg.kl.divergence, a.rpg.kl.beta) == ("vanilla", "ufkl", 0.02)
    assert (a.rpg.reference, a.rpg.reference_every) == ("periodic", 2)
    assert cfg.actor_rollout_ref.actor.clip_ratio_low == 0.1 and cfg.trainer.total_training_steps == 3 == child["total"]
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.actor_rollout_ref.actor.optim.lr == 5e-4
    assert cfg.trainer.experiment_name == "grpo_corrected-vanilla-kl_ufkl-ref_periodic-cpu"
    record = json.loads(child["log_path"].with_suffix(".launch.json").read_text())
    assert record["resumed_from_step"] is None and record["log"] == child["log_path"].name
    assert tables["tables"][:2] == ["--run", str(run_dir)]
    out = capsys.readouterr().out
    assert "the embedded CPU run replaces actor_rollout_ref.model.path=/nowhere/model, data.dir=" in out
    assert "No GPU is visible" in out and "The real run needs NVIDIA GPUs" in out
    assert "bash scripts/run_grpo_corrected.sh --dry-run --skip-data-check" in out


def test_without_gpu_a_bad_override_is_refused_before_the_cpu_run(monkeypatch, no_run, capsys):
    monkeypatch.setattr(cpu, "gpu_visible", lambda: False)
    assert launch.main(["method=rpg_rkl", "algorithm.rpg.beta=-1"], env={}) == 2
    assert "algorithm.rpg.beta must be a finite number >= 0" in capsys.readouterr().err
    assert no_run == []


def test_a_launch_hands_the_checked_config_to_main_rpg(tmp_path, monkeypatch, no_run, data_dir):
    """The GPU path: the run directory, a log per launch, the launch record, and the resolved config the child runs."""
    monkeypatch.setattr(cpu, "gpu_visible", lambda: True)
    run_dir = tmp_path / "my run's dir"
    env = {"CONTEXT": "2k", "DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir)}
    assert launch.main(["method=rpg_ufkl", "algorithm.rpg.beta=0.002"], env=env) == 0
    (child,) = no_run
    saved = OmegaConf.load(run_dir / "resolved_config.yaml")
    assert child["resolved"] == run_dir / "resolved_config.yaml"
    assert saved.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == str(child["log_path"])
    assert saved.trainer.default_local_dir == str(run_dir / "checkpoints") and saved.trainer.device == "cuda"
    assert saved.algorithm.rpg.beta == 0.002 and saved.data.max_response_length == 2048
    assert not OmegaConf.to_yaml(saved).count("${"), "the child gets a fully resolved config"
    assert json.loads(child["log_path"].with_suffix(".launch.json").read_text())["resumed_from_step"] is None


def test_a_launch_into_a_checkpointed_run_is_recorded_as_a_resume(tmp_path, monkeypatch, no_run, data_dir):
    monkeypatch.setattr(cpu, "gpu_visible", lambda: True)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("40")
    assert launch.main(["method=dapo"], env={"DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir)}) == 0
    (child,) = no_run
    assert json.loads(child["log_path"].with_suffix(".launch.json").read_text())["resumed_from_step"] == 40


def test_two_algorithms_never_share_a_run_directory(data_dir):
    env = {"DATA_DIR": str(data_dir)}
    names = {
        launch.prepare(overrides, env, on_cpu=False).run_dir.name
        for overrides in (["method=dapo"], ["method=dapo", "algorithm.policy_loss=rpg_fkl"],
                          ["method=rpg_fkl"], ["method=rpg_fkl", "algorithm.rpg.reference=fixed"],
                          ["method=grpo"], ["method=grpo_corrected"], ["method=dapo", "algorithm.rpg.kl.divergence=urkl"])
    }
    assert len(names) == 7, names
    assert launch.prepare(["method=dapo"], env, on_cpu=False).run_dir.name == "dapo-vanilla-qwen3-4b-8k"
    assert launch.prepare(["method=dapo", "algorithm.policy_loss=rpg_fkl"], env,
                          on_cpu=False).run_dir.name == "dapo-rpg_fkl-qwen3-4b-8k"


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_dump_config_never_launches(tmp_path, monkeypatch, no_run, gpu, capsys):
    monkeypatch.setattr(cpu, "gpu_visible", lambda: gpu)
    dump = tmp_path / "cfg.yaml"
    assert launch.main(["method=rpg_rkl", "--dump-config", str(dump)], env={"DATA_DIR": str(tmp_path)}) == 0
    assert no_run == []
    cfg = OmegaConf.load(dump)
    # on a machine without a GPU: the config that would train there (the embedded CPU run), and it says so
    assert cfg.trainer.device == ("cuda" if gpu else "cpu")
    assert ("embedded CPU run's config" in capsys.readouterr().out) is (not gpu)
    # --dry-run --dump-config: the command's own (cluster) config on any machine
    assert launch.main(["method=rpg_rkl", "--dry-run", "--skip-data-check", "--dump-config", str(dump)], env={}) == 0
    assert OmegaConf.load(dump).trainer.device == "cuda" and no_run == []


def test_on_a_gpu_host_the_launch_is_the_cluster_run(tmp_path, fake_gpu_path):
    # a visible GPU (a working nvidia-smi): no CPU hand-over, the config is the preset's own
    dump = tmp_path / "cfg.yaml"
    env = dict(os.environ, PATH=fake_gpu_path, RPG_RUN_PYTHON=sys.executable)
    env.pop("VERL_PLATFORM", None)
    proc = subprocess.run(["bash", "scripts/run_rpg_rkl.sh", "--dump-config", str(dump)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "No GPU is visible" not in proc.stdout
    assert OmegaConf.load(dump).actor_rollout_ref.rollout.name == "vllm"


def test_main_rpg_takes_algorithm_policy_loss_without_plus():
    """``python -m recipe.rpg.main_rpg algorithm.policy_loss=rpg_fkl``, as typed (Hydra's --cfg job prints the
    composed job config and exits before the task runs)."""
    proc = subprocess.run([sys.executable, "-m", "recipe.rpg.main_rpg", "algorithm.policy_loss=rpg_fkl",
                           "algorithm.rpg.beta=0.01", "--cfg", "job", "--resolve"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "rpg_fkl"
    assert cfg.actor_rollout_ref.actor.policy_loss.rpg.beta == 0.01
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False


def test_main_rpg_refuses_a_bad_config_before_ray():
    proc = subprocess.run([sys.executable, "-m", "recipe.rpg.main_rpg", "--config-name", "rpg_megatron_trainer",
                           "algorithm.rpg.beta=-1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "algorithm.rpg.beta must be a finite number >= 0" in proc.stderr
    assert "ray init" not in proc.stdout


def test_a_run_that_logged_nothing_leaves_no_empty_log(tmp_path, monkeypatch, no_run, data_dir):
    monkeypatch.setattr(cpu, "gpu_visible", lambda: True)

    def killed(resolved, log_path, env, total, verbose=False):
        Path(log_path).write_bytes(b"")  # verl's file logger created the file, then the run died
        return 137

    monkeypatch.setattr(progress, "run_and_follow", killed)
    run_dir = tmp_path / "run"
    assert launch.main(["method=dapo"], env={"DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir)}) == 137
    assert list((run_dir / "logs").iterdir()) == []


@pytest.mark.parametrize("outcome,rc,shown", [
    ("return", 0, "run finished"), ("exit 3", 3, "the run failed (exit 3)"), ("raise", 1, "RuntimeError: boom")])
def test_the_run_is_a_forked_child_in_its_own_session_with_the_launchs_environment(outcome, rc, shown, tmp_path,
                                                                                    monkeypatch, capsys):
    """progress.run_and_follow runs main_rpg.run on the resolved config in a forked child (verl is not imported a second
    time): its own session (the launcher stops it with its process group), the launch's environment (Ray's processes
    inherit it), all its output in <stamp>.out; here a line per logged step, and its exit status."""
    from recipe.rpg import main_rpg

    log, resolved = tmp_path / "logs" / "stamp.jsonl", tmp_path / "resolved_config.yaml"
    log.parent.mkdir()
    OmegaConf.save(OmegaConf.create({"trainer": {"device": "cpu"}}), resolved)
    parent = os.getpid()

    def run(config):
        print(f"child of {os.getppid() == parent}: session leader {os.getsid(0) == os.getpid()}, "
              f"device {config.trainer.device}, env {os.environ.get('RPG_TEST_VAR')}, cwd {os.getcwd() == str(REPO)}")
        log.write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.5, "timing_s/step": 2.0}}) + "\n")
        if outcome == "exit 3":
            sys.exit(3)
        if outcome == "raise":
            raise RuntimeError("boom")

    monkeypatch.setattr(main_rpg, "run", run)  # the child has this process's modules
    env = dict(os.environ, RPG_TEST_VAR="passed")
    assert progress.run_and_follow(resolved, log, env, 5) == rc
    assert os.environ.get("RPG_TEST_VAR") is None  # the child's environment is the child's
    output = (tmp_path / "logs" / "stamp.out").read_text()
    assert "child of True: session leader True, device cpu, env passed, cwd True" in output
    captured = capsys.readouterr()
    assert "[launch] step    1/5  score +0.500  2.0 s" in captured.out
    assert shown in (captured.out if rc == 0 else captured.err)
    if outcome == "raise":
        assert "Traceback" in output and "RuntimeError: boom" in output


def test_an_interrupted_launch_stops_the_whole_run(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the launcher: the child's whole process group (the run, and Ray's processes it started) gets SIGTERM."""
    import select
    import time

    from recipe.rpg import main_rpg

    log, resolved, pid_file = tmp_path / "stamp.jsonl", tmp_path / "resolved.yaml", tmp_path / "child.pid"
    OmegaConf.save(OmegaConf.create({}), resolved)

    def run(config):
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # as Ray's raylet is
        pid_file.write_text(f"{os.getpid()} {grandchild.pid}")
        select.select([], [], [], 120)

    real_sleep = time.sleep

    def ctrl_c(seconds):
        deadline = time.monotonic() + 60
        while (not pid_file.is_file() or " " not in pid_file.read_text()) and time.monotonic() < deadline:
            real_sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(main_rpg, "run", run)
    monkeypatch.setattr(progress.time, "sleep", ctrl_c)
    assert progress.run_and_follow(resolved, log, dict(os.environ), 1) == 130
    monkeypatch.undo()
    assert "interrupted" in capsys.readouterr().err
    for pid in map(int, pid_file.read_text().split()):
        for _ in range(100):
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} of the interrupted run is still running")


@pytest.mark.parametrize("argv,message", [
    (["--dryrun"], "unknown argument '--dryrun'"),
    (["--dump-config"], "--dump-config needs a path"),
    (["method=dapo", "trainer.n_gpus_per_nod=8", "--dry-run"], "unknown config key 'trainer.n_gpus_per_nod'"),
])
def test_bad_arguments_exit_2_naming_the_argument(argv, message, capsys):
    assert launch.main(argv, env={}) == 2
    assert message in capsys.readouterr().err

"""The verl plugin in real processes: a fresh `import verl`, a Ray worker, and the loud check command."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rpg_ext import RPG_LOSS_NAMES

PROBE = "import json, verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; print(json.dumps(sorted(R)))"


def run_python(code, env_extra=None, args=()):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed package, not the test tree, must provide the plugin
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args, *(["-c", code] if code else [])], capture_output=True, text=True,
                          env=env, timeout=300, cwd="/")


def test_plain_import_verl_registers_all_eight_in_a_fresh_process(fresh_import_verl):
    names = fresh_import_verl["losses"]
    assert set(RPG_LOSS_NAMES) <= set(names)
    assert "vanilla" in names  # verl's own losses are untouched


def test_importing_our_config_module_first_still_registers_the_losses():
    # `import rpg_ext.config` imports verl, whose plugin loading imports rpg_ext.losses mid-way: no import cycle
    out = run_python("import rpg_ext.config; " + PROBE)
    assert out.returncode == 0, out.stderr
    assert set(RPG_LOSS_NAMES) <= set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_registration_is_idempotent(fresh_import_verl):
    assert fresh_import_verl["reregistration_changed"] is False, "re-registration changed the registry"
    assert "rpg_fkl" in fresh_import_verl["foreign_refused"]  # someone else's function under our name: refused


@pytest.mark.slow
def test_a_ray_worker_sees_the_losses_after_import_verl():
    code = textwrap.dedent(
        """
        import json, ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

        @ray.remote
        def worker_registry():
            import verl
            from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
            import os
            return os.getpid(), sorted(POLICY_LOSS_REGISTRY)

        @ray.remote
        class Actor:
            def names(self):
                import verl
                from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
                return sorted(POLICY_LOSS_REGISTRY)

        pid, names = ray.get(worker_registry.remote())
        actor_names = ray.get(Actor.remote().names.remote())
        import os
        print(json.dumps({"pid": pid, "driver": os.getpid(), "task": names, "actor": actor_names}))
        ray.shutdown()
        """
    )
    out = run_python(code, {"RAY_DEDUP_LOGS": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["pid"] != info["driver"], "the task must run in a separate worker process"
    assert set(RPG_LOSS_NAMES) <= set(info["task"])
    assert set(RPG_LOSS_NAMES) <= set(info["actor"])


def test_check_command_passes_on_a_good_install():
    out = run_python(None, args=("-m", "rpg_ext", "check"))
    assert out.returncode == 0, out.stderr
    assert "rpg_ext OK" in out.stdout and all(n in out.stdout for n in RPG_LOSS_NAMES)


def test_check_command_fails_loudly_when_the_plugin_cannot_import(tmp_path):
    # break an import of the plugin in every child process: `import verl` then silently lacks the losses,
    # and the check must say so and show the underlying error
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rpg_ext.losses':\n"
        "            raise ImportError('simulated broken dependency of rpg_ext.losses')\n"
        "sys.meta_path.insert(0, _Broken())\n"
    )
    silent = run_python(PROBE, {"PYTHONPATH": str(tmp_path)})
    assert silent.returncode == 0, "verl itself swallows the plugin error"
    assert not set(RPG_LOSS_NAMES) & set(json.loads(silent.stdout.strip().splitlines()[-1]))

    out = run_python(None, {"PYTHONPATH": str(tmp_path)}, args=("-m", "rpg_ext", "check"))
    assert out.returncode != 0
    assert "not registered" in out.stderr
    assert "simulated broken dependency of rpg_ext.losses" in out.stderr


def test_check_command_names_a_disabling_environment_variable():
    out = run_python(None, {"VERL_USE_EXTERNAL_PLUGINS": "none"}, args=("-m", "rpg_ext", "check"))
    assert out.returncode != 0
    assert "VERL_USE_EXTERNAL_PLUGINS" in out.stderr

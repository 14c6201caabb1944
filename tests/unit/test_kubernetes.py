"""The Kubernetes manifests, the Dockerfile and render.yaml fit the service they run.

No cluster, no image build, no server: each manifest is checked against the
Kubernetes API's own schemas (kubernetes-validate, strict, offline), then
against what this service needs: its health paths, its start command, its
shutdown (drain, then gunicorn's graceful timeout, both from the plan), the
paths it writes, and the pods the Service, the HPA and the PDB act on.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fitflix.memory.container import MIB
from fitflix.serving.sizing import Plan, make_plan
from fitflix.settings import Settings
from tests.fakes import container
from tests.unit.test_deploy_files import variables_read_by_settings

PROJECT = Path(__file__).resolve().parents[2]
MANIFESTS = PROJECT / "deploy/kubernetes"
MANIFEST_FILES = sorted(MANIFESTS.glob("*.yaml"))
EXPECTED_MANIFESTS = {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
# The oldest and the newest Kubernetes the pinned kubernetes-validate ships schemas for;
# nothing here needs more than 1.25 (policy/v1 came in 1.21, autoscaling/v2 in 1.23).
KUBERNETES_VERSIONS = ("1.25", "1.37")
# What Render waits between SIGTERM and SIGKILL when render.yaml does not say (blueprint spec: 1-300, default 30).
RENDER_DEFAULT_SHUTDOWN_DELAY_S = 30
RENDER_SHUTDOWN_DELAY_RANGE_S = (1, 300)
# Stands in for the Secret's value when the pods' environment is read: long enough for Settings.
TOKEN_STAND_IN = "t" * 32
# Where a string literal in the service's code names a place it may write.
WRITABLE_LITERAL = re.compile(r"""["'](/(?:tmp|dev/shm|var|run|home)(?:/[^"'\s]*)?)["']""")
SERVICE_SOURCES = (PROJECT / "gunicorn.conf.py", PROJECT / "wsgi.py", *sorted((PROJECT / "fitflix").rglob("*.py")))
MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}


@functools.cache
def manifest(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


def pod_spec() -> dict:
    return manifest("deployment.yaml")["spec"]["template"]["spec"]


def pod_labels() -> dict[str, str]:
    return manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]


def web_container() -> dict:
    (only,) = pod_spec()["containers"]
    return only


def container_port() -> int:
    (port,) = web_container()["ports"]
    return port["containerPort"]


def resolve_port(port: int | str) -> int:
    """A probe's or a Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = {entry["name"]: entry["containerPort"] for entry in web_container()["ports"] if "name" in entry}
    assert port in named, f"port {port!r} names no port of the container ({sorted(named)})"
    return named[port]


def memory_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity)).groups()
    return int(number) * MEMORY_UNITS.get(unit or "", 1)


def procfile_command() -> list[str]:
    (line,) = (PROJECT / "Procfile").read_text().splitlines()
    process, command = line.split(":", 1)
    assert process == "web"
    return shlex.split(command)


@functools.cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    instructions, pending = [], ""
    for line in (PROJECT / "Dockerfile").read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        keyword, _, arguments = (pending + text).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return tuple(instructions)


def dockerfile_last(keyword: str) -> str | None:
    """The arguments of the last `keyword` instruction (the one in force), or None."""
    found = [arguments for name, arguments in dockerfile_instructions() if name == keyword]
    return found[-1] if found else None


def dockerfile_exec_form(keyword: str) -> list[str] | None:
    arguments = dockerfile_last(keyword)
    if arguments is None:
        return None
    try:
        command = json.loads(arguments)
    except ValueError:
        command = None
    if not isinstance(command, list):
        pytest.fail(
            f"Dockerfile {keyword} {arguments}: use the exec form (a JSON list); the shell form runs /bin/sh as "
            "PID 1, which does not pass SIGTERM on to gunicorn, so the service would never drain"
        )
    return command


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in dockerfile_instructions():
        if name == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(arguments))
    return env


def pods_environment() -> dict[str, str]:
    """The web container's environment as the service reads it; a Secret's value is a stand-in."""
    environment = {}
    for variable in web_container().get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            environment[variable["name"]] = TOKEN_STAND_IN
    return environment


def pods_plan() -> Plan:
    """The plan a pod makes: its environment, and its memory limit read from its cgroup v2."""
    limit_mb = memory_bytes(web_container()["resources"]["limits"]["memory"]) // MIB
    return make_plan(Settings.from_env(pods_environment()), container(limit_mb, 2))


def render_service() -> dict:
    (service,) = yaml.safe_load((PROJECT / "render.yaml").read_text())["services"]
    return service


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_the_folder_holds_each_manifest_with_a_header_comment():
    assert {path.name for path in MANIFEST_FILES} >= EXPECTED_MANIFESTS
    for path in MANIFEST_FILES:
        assert path.read_text().startswith("# "), f"{path.name} starts without a header comment"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda path: path.name)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(path, version):
    (resource,) = [document for document in yaml.safe_load_all(path.read_text()) if document]
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(step) for step in error.path)
        pytest.fail(f"{path.name} is not valid Kubernetes {version}: {where}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError as error:
        # The CLI only warns about an unknown kind or apiVersion, and exits 0.
        pytest.fail(f"{path.name}: {error.message}")


def test_probes_ask_the_health_paths_on_the_container_port():
    web = web_container()
    expected = {
        "livenessProbe": {"/health/live"},
        "readinessProbe": {"/health/ready"},
        "startupProbe": {"/health/live", "/health"},
    }
    for probe, paths in expected.items():
        assert probe in web, f"the container has no {probe}"
        request = web[probe]["httpGet"]
        assert request["path"] in paths, f"{probe} asks {request['path']}, expected one of {sorted(paths)}"
        assert resolve_port(request["port"]) == container_port(), f"{probe} asks another port"
        assert request.get("scheme", "HTTP") == "HTTP"


def test_memory_request_equals_the_limit_and_cpu_is_requested():
    resources = web_container()["resources"]
    assert memory_bytes(resources["requests"]["memory"]) == memory_bytes(resources["limits"]["memory"])
    assert "cpu" in resources["requests"], "no CPU request: the HPA's utilization is measured against it"


def test_the_grace_period_outlasts_the_drain_and_the_graceful_timeout():
    plan = pods_plan()
    shutdown_s = plan.drain_s + plan.graceful_timeout_s
    grace_s = pod_spec()["terminationGracePeriodSeconds"]
    assert grace_s > shutdown_s, f"SIGKILL after {grace_s} s, but the drain and graceful timeout take {shutdown_s} s"


def test_liveness_outlasts_the_graceful_timeout():
    probe = web_container()["livenessProbe"]
    tolerated_s = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert tolerated_s > pods_plan().graceful_timeout_s


def test_the_container_runs_the_procfile_command():
    web = web_container()
    if "command" in web:
        runs = web["command"] + web.get("args", [])
    else:  # the image's ENTRYPOINT, with args or the image's CMD
        runs = (dockerfile_exec_form("ENTRYPOINT") or []) + web.get("args", dockerfile_exec_form("CMD") or [])
    assert runs == procfile_command()


def test_the_dockerfile_cmd_is_the_procfile_command_in_exec_form():
    assert dockerfile_exec_form("ENTRYPOINT") is None, "an ENTRYPOINT would run in front of the CMD"
    assert dockerfile_exec_form("CMD") == procfile_command()


def test_the_dockerfile_python_is_renders():
    (base,) = [arguments for name, arguments in dockerfile_instructions() if name == "FROM"]
    match = re.fullmatch(r"python:(\d+\.\d+(?:\.\d+)?)-slim", base)
    assert match, f"FROM {base}: expected python:X.Y[.Z]-slim"
    render_version = next(item["value"] for item in render_service()["envVars"] if item["key"] == "PYTHON_VERSION")
    image_version = match.group(1).split(".")
    assert image_version == render_version.split(".")[: len(image_version)], (base, render_version)


def test_the_dockerfile_exposes_the_port_the_pods_listen_on():
    assert dockerfile_last("EXPOSE") == str(container_port())
    assert dockerfile_env().get("PORT") == str(container_port())
    assert pods_environment()["PORT"] == str(container_port())


def test_the_pod_runs_as_the_dockerfile_user_never_root():
    security = pod_spec().get("securityContext", {}) | web_container().get("securityContext", {})
    user = dockerfile_last("USER")
    assert user and re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: runAsNonRoot can only check a numeric uid"
    uid, _, gid = user.partition(":")
    assert security.get("runAsNonRoot") is True
    assert security.get("runAsUser") == int(uid) != 0
    if gid:
        assert security.get("runAsGroup") == int(gid)


def test_the_container_is_locked_down():
    security = pod_spec().get("securityContext", {}) | web_container().get("securityContext", {})
    assert security.get("allowPrivilegeEscalation") is False
    assert security.get("capabilities", {}).get("drop") == ["ALL"]
    assert not security.get("capabilities", {}).get("add")
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert security.get("readOnlyRootFilesystem") is True


def test_every_path_the_service_writes_is_an_empty_dir():
    written = set()
    for source in SERVICE_SOURCES:
        text = source.read_text()
        if re.search(r"\btempfile\b", text):  # tempfile writes to $TMPDIR, else /tmp
            written.add(pods_environment().get("TMPDIR", "/tmp"))
        written.update(WRITABLE_LITERAL.findall(text))
    assert written, "found no path the service writes: the scan of its sources is broken"
    mounts = {mount["mountPath"].rstrip("/"): mount["name"] for mount in web_container().get("volumeMounts", [])}
    empty_dirs = {volume["name"] for volume in pod_spec().get("volumes", []) if "emptyDir" in volume}
    for path in sorted(written):
        covering = [mounted for mounted in mounts if path == mounted or path.startswith(mounted + "/")]
        assert covering, f"the service writes {path}, which is on the read-only root filesystem"
        assert mounts[max(covering, key=len)] in empty_dirs, f"{path} is mounted from something other than an emptyDir"
    # gunicorn's control socket would write under $HOME (or $XDG_RUNTIME_DIR), which no volume covers.
    assert Settings.from_env(pods_environment()).control_socket is False


def test_the_environment_is_valid_and_leaves_the_limit_to_the_cgroup():
    environment = pods_environment()
    assert set(environment) <= variables_read_by_settings(), "a variable the service does not read"
    assert "MAX_MEMORY_MB" not in environment
    token = next(variable for variable in web_container()["env"] if variable["name"] == "HEALTH_TOKEN")
    assert "secretKeyRef" in token.get("valueFrom", {}), "HEALTH_TOKEN must come from a Secret, not this file"
    assert Settings.from_env(environment).port == container_port()


def test_prometheus_annotations_point_at_metrics_on_the_container_port():
    annotations = manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container_port())
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_hpa_scales_the_deployment_on_cpu_only():
    hpa, deployment = manifest("hpa.yaml"), manifest("deployment.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "fitflix-backend")
    assert deployment["metadata"]["name"] == target["name"]
    metrics = hpa["spec"]["metrics"]
    assert metrics and all(metric["type"] == "Resource" for metric in metrics)
    assert {metric["resource"]["name"] for metric in metrics} == {"cpu"}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the count: a replicas field would be re-applied over its decision on every kubectl apply.
    assert "replicas" not in deployment["spec"]


def test_the_deployment_pdb_and_service_select_the_same_pods():
    deployment, pdb, service = manifest("deployment.yaml"), manifest("pdb.yaml"), manifest("service.yaml")
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels())
    assert pdb["apiVersion"] == "policy/v1"
    assert set(pdb["spec"]["selector"]) == {"matchLabels"}
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels())
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels())
    (port,) = service["spec"]["ports"]
    assert resolve_port(port["targetPort"]) == container_port()


def test_the_pdb_lets_a_node_drain_evict_a_pod():
    budget = manifest("pdb.yaml")["spec"]
    min_replicas = manifest("hpa.yaml")["spec"]["minReplicas"]
    if "minAvailable" in budget:
        assert budget["minAvailable"] < min_replicas, "with every pod required, an eviction waits forever"
    else:
        assert budget["maxUnavailable"] >= 1


def test_render_waits_for_the_drain_and_the_graceful_timeout():
    service = render_service()
    environment = {item["key"]: item["value"] for item in service["envVars"] if "value" in item}
    plan = make_plan(Settings.from_env(environment), container(512, 2))
    delay_s = service.get("maxShutdownDelaySeconds", RENDER_DEFAULT_SHUTDOWN_DELAY_S)
    low, high = RENDER_SHUTDOWN_DELAY_RANGE_S
    assert low <= delay_s <= high
    assert delay_s >= plan.drain_s + plan.graceful_timeout_s


def test_render_free_plan_runs_one_instance_without_autoscaling():
    service = render_service()
    assert service["plan"] == "free"
    assert service["numInstances"] == 1
    assert "scaling" not in service


def test_dockerignore_keeps_the_env_file_out_of_the_image():
    ignored = (PROJECT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored, ".env holds secrets (HEALTH_TOKEN)"

"""The safe rolling deploy, checked on the objects themselves: the rollout and its probes
(the timings `rehearse --rolling` rehearses), the drain inside the grace period, what
every pod may do (non-root, read-only, no capabilities), requests and limits, pinned
images and the image's own entry points, the migration Job against the runner's retries,
the Service / PDB / HPA / NetworkPolicies, the Secrets, and the settings as src/config.py
reads them."""

import re
import shlex
import tomllib

import pytest
import yaml

from src.config import PROJECT_ROOT
from tests.deploy.manifests import (
    API,
    CONFIG,
    JOB_FIRST_BACKOFF_SECONDS,
    NAMESPACE,
    PGBOUNCER,
    POOLER_CONFIG,
    REHEARSED,
    RUNNER_START_SECONDS,
    SECRET_NAME,
    container,
    containers,
    docs_text,
    documented_secrets,
    environment,
    objects,
    one,
    pod_labels,
    pod_spec,
    quantity,
    rollout,
    secret_placeholder,
    secret_refs,
    selects,
    settings,
    shell_commands,
    workloads,
)
from tests.docker.compose import COMPOSE_FILE, command_argv, dockerfile_cmd, runtime_stage

BASE = objects()
ALL = objects(pgbouncer=True)
# The API pod's port: the image's API_PORT.
API_PORT = 8765
PG_PORT = 5432
PGBOUNCER_PORT = 6432


def api_deployment(objs: list[dict] = BASE) -> dict:
    return one(objs, "Deployment", API)


def api_container(objs: list[dict] = BASE) -> dict:
    return container(api_deployment(objs), "api")


def job() -> dict:
    return one(BASE, "Job")


def image_env() -> dict[str, str]:
    """The runtime stage's ENV, which every container of the image starts with."""
    pairs = [a for keyword, a in runtime_stage() if keyword == "ENV"]
    return dict(item.split("=", 1) for line in pairs for item in shlex.split(line))


def image_user() -> tuple[int, int]:
    (user,) = [a for keyword, a in runtime_stage() if keyword == "USER"]
    uid, gid = user.split(":")
    return int(uid), int(gid)


# --- the rollout --------------------------------------------------------------------------


def test_the_rollout_is_the_rehearsed_one():
    """replicas 3; RollingUpdate one surge pod at a time, never fewer ready pods
    (maxUnavailable 0); readiness every 2 s, out at the first failure; preStop 5 s; drain
    20 s; grace 30 s: the defaults of `rehearse --rolling`."""
    deployment = api_deployment()
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    update = deployment["spec"]["strategy"]["rollingUpdate"]
    # Integers, not percentages: 25% of 3 would round to other numbers than rehearsed.
    assert isinstance(update["maxSurge"], int) and isinstance(update["maxUnavailable"], int)
    assert update["maxUnavailable"] == 0, "a rollout must never take a ready pod out first"
    assert rollout(BASE) == REHEARSED


def test_api_probes():
    api = api_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in api, f"the API container has no {probe}"
        assert (
            set(api[probe])
            - {
                "httpGet",
                "periodSeconds",
                "timeoutSeconds",
                "failureThreshold",
                "successThreshold",
                "initialDelaySeconds",
            }
            == set()
        ), api[probe]
        assert api[probe]["httpGet"]["port"] in ("http", API_PORT), probe
        assert api[probe].get("timeoutSeconds", 1) <= api[probe].get("periodSeconds", 10)
    # Readiness is the database check; startup and liveness never touch the database.
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = api["startupProbe"]
    assert 20 <= startup["periodSeconds"] * startup["failureThreshold"] <= 120, (
        "the app answers /health within ~2 s; give it tens of seconds, not forever"
    )
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": API_PORT}


def test_liveness_never_fires_during_a_drain():
    """Even if the kubelet kept probing a deleted pod, liveness could not fail it within
    the grace period; and it starts only after the startup probe passed."""
    api, spec = api_container(), pod_spec(api_deployment())
    liveness = api["livenessProbe"]
    window = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert window >= spec["terminationGracePeriodSeconds"], window
    assert liveness.get("initialDelaySeconds", 0) == 0, "the startup probe holds it off"


def test_the_drain_fits_the_grace_period():
    api, spec = api_container(), pod_spec(api_deployment())
    pre_stop = api["lifecycle"]["preStop"]
    # The native sleep: the image needs no `sleep` binary, its root is read-only.
    assert set(pre_stop) == {"sleep"}, pre_stop
    drain = settings(environment(api, BASE)).drain_timeout_seconds
    spare = spec["terminationGracePeriodSeconds"] - pre_stop["sleep"]["seconds"] - drain
    assert spare >= 5, f"preStop + DRAIN_TIMEOUT_SECONDS leave {spare} s of the grace period"
    # What the readiness probe sees during the preStop sleep is irrelevant (the endpoint
    # is already gone); what matters is that the sleep outlasts one readiness period.
    assert pre_stop["sleep"]["seconds"] >= REHEARSED.readiness_period_seconds


# --- what every pod may do ------------------------------------------------------------


@pytest.mark.parametrize("workload", workloads(ALL), ids=lambda w: w["metadata"]["name"])
def test_pods_run_non_root_read_only_without_capabilities(workload):
    spec = pod_spec(workload)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    if workload["metadata"]["name"] != PGBOUNCER:  # the project's own image
        assert (pod["runAsUser"], pod["runAsGroup"]) == image_user() == (10001, 10001)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert not [v for v in spec.get("volumes", []) if "hostPath" in v]
    for c in containers(workload):
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, c["name"]
        assert context["readOnlyRootFilesystem"] is True, c["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert not context.get("privileged"), c["name"]
        assert context.get("runAsUser", pod["runAsUser"]) != 0, c["name"]


@pytest.mark.parametrize("workload", workloads(ALL), ids=lambda w: w["metadata"]["name"])
def test_writable_paths_are_small_empty_dirs(workload):
    """A read-only root: whatever must be written goes to a bounded emptyDir."""
    spec = pod_spec(workload)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(workload):
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts, c["name"]  # noqa: S108 - the container's own /tmp
        for name in mounts.values():
            assert set(volumes[name]) == {"name", "emptyDir"}, volumes[name]
            assert quantity(volumes[name]["emptyDir"]["sizeLimit"]) <= 64 * 2**20


def test_the_image_writes_no_bytecode():
    assert image_env().get("PYTHONDONTWRITEBYTECODE") == "1"


@pytest.mark.parametrize("workload", workloads(ALL), ids=lambda w: w["metadata"]["name"])
def test_every_container_has_requests_and_limits(workload):
    for c in containers(workload):
        resources = c["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, (c["name"], resource)


def test_the_api_memory_limit_holds_the_cache():
    api = api_container()
    cache_mib = settings(environment(api, BASE)).cache_max_mb
    limit_mib = quantity(api["resources"]["limits"]["memory"]) / 2**20
    # ~100 MiB measured without a cache; the cached responses on top, with headroom.
    assert limit_mib >= 2 * cache_mib + 256, limit_mib


# --- images and entry points ----------------------------------------------------------


def release_image() -> tuple[str, str]:
    images = {c["image"] for w in workloads(BASE) for c in containers(w)}
    assert len(images) == 1, f"the Job and the API run one image: {images}"
    (image,) = images
    repository, _, tag = image.rpartition(":")
    return repository, tag


@pytest.mark.parametrize("workload", workloads(ALL), ids=lambda w: w["metadata"]["name"])
def test_images_are_pinned(workload):
    for c in containers(workload):
        image = c["image"]
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag (that is :latest)"
        assert tag != "latest" and "latest" not in tag.split("-"), image
        assert c["imagePullPolicy"] == "IfNotPresent", image


def test_one_release_tag_names_the_images_and_the_job():
    repository, tag = release_image()
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"a release version, not {tag!r}"
    assert repository.endswith("/alembic-stuff"), repository
    assert job()["metadata"]["name"] == f"alembic-stuff-migrate-{tag.replace('.', '-')}"


def test_pgbouncer_runs_the_composes_pgbouncer_image():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    bouncer = container(one(ALL, "Deployment", PGBOUNCER))
    assert bouncer["image"] == compose["services"]["pgbouncer"]["image"]


def test_the_containers_run_the_images_entry_points():
    """The API runs the image's CMD (compose's api command); the Job runs the runner as
    compose's migrate service and `pipenv run migrate` do."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    pipfile = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())
    api = api_container()
    assert api["command"] == dockerfile_cmd() == ["python", "-m", "src.serve"]
    assert api["command"] == command_argv(compose["api"]["command"])
    assert "args" not in api
    migrate = container(job())
    runner = shlex.split(pipfile["scripts"]["migrate"])
    assert migrate["command"] == runner == ["python", "-m", "alembic_pg_guard", "migrate"]
    assert migrate["command"] == command_argv(compose["migrate"]["command"])
    assert "args" not in migrate


# --- the migration Job ----------------------------------------------------------------


def test_the_job_fits_the_runners_retries():
    spec = job()["spec"]
    runner = settings(environment(container(job()), BASE))
    assert spec["parallelism"] == spec["completions"] == 1
    assert pod_spec(job())["restartPolicy"] == "Never"  # each attempt is a pod with a log
    assert 0 <= spec["backoffLimit"] <= 2, "the runner retries lock waits itself"
    attempt = (
        runner.migration_lock_wait_seconds
        + runner.migration_lock_retry_total_seconds
        + runner.migration_statement_timeout_ms / 1000
        + RUNNER_START_SECONDS
    )
    needed = (spec["backoffLimit"] + 1) * attempt + spec["backoffLimit"] * JOB_FIRST_BACKOFF_SECONDS
    deadline = spec["activeDeadlineSeconds"]
    assert needed <= deadline <= needed + 300, (
        f"activeDeadlineSeconds {deadline}: the runner needs up to {needed:g} s "
        "before it gives up on its own; not much more"
    )
    assert 3600 <= spec["ttlSecondsAfterFinished"] <= 7 * 86400, "its log, kept a while"
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_the_docs_wait_outlasts_the_jobs_deadline():
    waits = [c for c in shell_commands(docs_text()) if "--for=condition=complete" in c]
    assert len(waits) == 1, waits
    timeout = re.search(r"--timeout=(\d+)s", waits[0])
    assert timeout and int(timeout[1]) > job()["spec"]["activeDeadlineSeconds"], waits[0]


# --- Service, PodDisruptionBudget, HPA ------------------------------------------------


def test_service_pdb_and_hpa_cover_the_api_pods():
    deployment, labels = api_deployment(), pod_labels(api_deployment())
    assert selects(deployment["spec"]["selector"], labels)
    service = one(BASE, "Service", API)
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    pdb = one(BASE, "PodDisruptionBudget", API)
    assert selects(pdb["spec"]["selector"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = one(BASE, "HorizontalPodAutoscaler", API)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", API)
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == REHEARSED.replicas
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # Nothing else selects these pods.
    for workload in workloads(ALL):
        if workload["metadata"]["name"] != API:
            assert not selects(deployment["spec"]["selector"], pod_labels(workload))


def test_pgbouncer_is_reached_through_its_service():
    bouncer = one(ALL, "Deployment", PGBOUNCER)
    service = one(ALL, "Service", PGBOUNCER)
    assert service["spec"]["selector"].items() <= pod_labels(bouncer).items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PGBOUNCER_PORT
    ports = {p["name"]: p["containerPort"] for p in container(bouncer)["ports"]}
    assert ports == {port["targetPort"]: PGBOUNCER_PORT}
    env = environment(container(bouncer), ALL)
    assert (env["POOL_MODE"], env["LISTEN_PORT"]) == ("transaction", str(PGBOUNCER_PORT))
    for probe in ("readinessProbe", "livenessProbe"):
        assert container(bouncer)[probe]["tcpSocket"]["port"] == port["targetPort"]


# --- network policies -----------------------------------------------------------------


def policy_for(workload: dict) -> dict:
    policies = [
        o
        for o in ALL
        if o["kind"] == "NetworkPolicy" and selects(o["spec"]["podSelector"], pod_labels(workload))
    ]
    assert len(policies) == 1, f"{workload['metadata']['name']}: {len(policies)} policies"
    (policy,) = policies
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    return policy


def egress(policy: dict) -> set[tuple[str, int, str]]:
    """(what, port, protocol) for each destination the policy allows."""
    allowed = set()
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                what = "any address"
            elif peer.get("namespaceSelector") == {
                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
            } and peer.get("podSelector") == {"matchLabels": {"k8s-app": "kube-dns"}}:
                what = "dns"
            elif (
                peer.get("podSelector", {})
                .get("matchLabels", {})
                .get("app.kubernetes.io/component")
                == "pgbouncer"
                and "namespaceSelector" not in peer
            ):
                what = "pgbouncer"
            else:
                raise AssertionError(f"{policy['metadata']['name']}: egress to {peer}")
        for port in rule["ports"]:
            allowed.add((what, port["port"], port["protocol"]))
    return allowed


DNS = {("dns", 53, "UDP"), ("dns", 53, "TCP")}


def test_the_api_reaches_only_postgresql_pgbouncer_and_dns():
    policy = policy_for(api_deployment())
    postgres_port = int(one(BASE, "ConfigMap", CONFIG)["data"]["POSTGRES_PORT"])
    assert postgres_port == PG_PORT
    assert egress(policy) == DNS | {
        ("any address", postgres_port, "TCP"),
        ("pgbouncer", PGBOUNCER_PORT, "TCP"),
    }
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": API_PORT, "protocol": "TCP"}]


def test_the_job_and_pgbouncer_reach_only_postgresql_and_dns():
    assert egress(policy_for(job())) == DNS | {("any address", PG_PORT, "TCP")}
    assert "ingress" not in policy_for(job())["spec"], "no one connects to the Job"
    bouncer = policy_for(one(ALL, "Deployment", PGBOUNCER))
    assert egress(bouncer) == DNS | {("any address", PG_PORT, "TCP")}
    (ingress,) = bouncer["spec"]["ingress"]
    (peer,) = ingress["from"]
    assert selects(peer["podSelector"], pod_labels(api_deployment()))
    assert ingress["ports"] == [{"port": PGBOUNCER_PORT, "protocol": "TCP"}]


# --- secrets and settings -------------------------------------------------------------


def test_secrets_are_referenced_never_held():
    for obj in ALL:
        assert obj["kind"] != "Secret", obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap":
            for key in obj["data"]:
                assert not SECRET_NAME.search(key), f"{obj['metadata']['name']}: {key}"
            for value in obj["data"].values():
                assert not re.search(r"://[^/@]*:[^/@]*@", value), value
    documented = documented_secrets()
    used = {ref for w in workloads(ALL) for c in containers(w) for ref in secret_refs(c)}
    assert used == {(name, key) for name, keys in documented.items() for key in keys}, (
        "docs/kubernetes.md creates exactly the Secrets and keys the pods read"
    )
    # Only the Job gets the schema owner's password.
    owner = {
        w["metadata"]["name"]
        for w in workloads(ALL)
        for c in containers(w)
        if ("alembic-stuff-owner", "POSTGRES_PASSWORD") in secret_refs(c)
    }
    assert owner == {job()["metadata"]["name"]}


def test_the_docs_generate_the_apps_secrets():
    (command,) = [c for c in shell_commands(docs_text()) if "generic alembic-stuff-app" in c]
    for key in ("POSTGRES_APP_PASSWORD", "API_KEY"):
        assert re.search(rf"--from-literal={key}=\"\$\(python3 -c '[^']*token_urlsafe", command)


@pytest.mark.parametrize("pgbouncer", [False, True], ids=["direct", "pgbouncer"])
def test_the_api_gets_its_settings_as_src_config_reads_them(pgbouncer):
    objs = objects(pgbouncer=pgbouncer)
    api = api_container(objs)
    env = environment(api, objs)
    for name, value in env.items():
        assert "$(" not in value, f"{name}: {value} refers to an undefined variable"
    s = settings(env)
    config = one(objs, "ConfigMap", CONFIG)["data"]
    assert s.environment == "production"
    assert s.startup_problem() is None, "a generated API_KEY and a database it can log in to"
    assert (s.api_host, s.api_port) == ("0.0.0.0", API_PORT)  # noqa: S104
    assert (s.api_host, str(s.api_port)) == (image_env()["API_HOST"], image_env()["API_PORT"])
    app, listener = s.app_async_url, s.cache_listen_url
    assert app.username == listener.username == s.postgres_app_user == config["POSTGRES_APP_USER"]
    assert app.password == secret_placeholder("alembic-stuff-app", "POSTGRES_APP_PASSWORD")
    assert app.database == listener.database == config["POSTGRES_DB"]
    # The cache's LISTEN always goes to PostgreSQL itself.
    assert (listener.host, listener.port) == (config["POSTGRES_HOST"], PG_PORT)
    if pgbouncer:
        assert (app.host, app.port) == (PGBOUNCER, PGBOUNCER_PORT)
        assert s.db_transaction_pooler is True
        assert POOLER_CONFIG in [ref["configMapRef"]["name"] for ref in api["envFrom"]][-1:], (
            "the pooler's ConfigMap is read last, so it wins"
        )
    else:
        assert (app.host, app.port) == (listener.host, listener.port)
        assert s.db_transaction_pooler is False
    assert not s.postgres_password, "the API never gets the owner's password"


def test_the_job_migrates_postgresql_itself_as_the_owner():
    env = environment(container(job()), BASE)
    s = settings(env)
    config = one(BASE, "ConfigMap", CONFIG)["data"]
    url = s.sync_url
    assert (url.host, url.port, url.database) == (
        config["POSTGRES_HOST"],
        PG_PORT,
        config["POSTGRES_DB"],
    )
    assert url.username == config["POSTGRES_USER"] != s.postgres_app_user
    assert url.password == secret_placeholder("alembic-stuff-owner", "POSTGRES_PASSWORD")
    assert s.postgres_app_password is not None, "the runner sets the API role's password"
    assert not s.app_database_url and not s.db_transaction_pooler, "never through a pooler"
    assert [ref["configMapRef"]["name"] for ref in container(job())["envFrom"]] == [CONFIG]


def test_everything_lives_in_one_namespace_that_enforces_the_restricted_profile():
    namespace = one(BASE, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

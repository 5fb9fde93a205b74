"""Connections to PostgreSQL, from the manifests: at the HPA's maximum during a rollout,
the API's pools and cache listeners, the migration Job and the other clients stay within
the server's max_connections (less its reserved slots, written down in the ConfigMap), or
PgBouncer is required; through PgBouncer, its server pools do, and it takes every pool as
its clients."""

import copy

import pytest

from tests.deploy.manifests import (
    ANNOTATION,
    API,
    CONFIG,
    PGBOUNCER,
    RUNNER_CONNECTIONS,
    annotation,
    api_peak_pods,
    api_settings,
    budget,
    container,
    direct_demand,
    job_connections,
    objects,
    one,
    pgbouncer_clients,
    pgbouncer_demand,
    pgbouncer_settings,
)

BASE = objects()
ALL = objects(pgbouncer=True)
HOW = (
    "lower DB_POOL_SIZE / DB_MAX_OVERFLOW or the HPA's maxReplicas, raise the server's "
    "max_connections (and its annotation), or put PgBouncer in front "
    "(deploy/kubernetes/pgbouncer/) and set the annotation pgbouncer: required"
)


def pgbouncer_required(objs: list[dict]) -> bool:
    value = annotation(one(objs, "ConfigMap", CONFIG), "pgbouncer")
    assert value in ("optional", "required"), f"{ANNOTATION}pgbouncer: {value!r}"
    return value == "required"


def test_the_budget_is_written_down():
    b = budget(BASE)
    assert b.max_connections >= 1
    assert b.usable > 0, b
    pgbouncer_required(BASE)


def test_the_job_counts_the_runners_connections():
    assert job_connections(BASE) == RUNNER_CONNECTIONS


def test_direct_pools_fit_max_connections_or_pgbouncer_is_required():
    demand = direct_demand(BASE)
    assert demand.fits or pgbouncer_required(BASE), f"{demand.arithmetic()}: {HOW}"


def test_pgbouncer_server_pools_fit_max_connections():
    demand = pgbouncer_demand(ALL)
    assert demand.fits, f"through PgBouncer: {demand.arithmetic()}"
    p = pgbouncer_settings(ALL)
    assert p["MAX_DB_CONNECTIONS"] > 0, "a hard cap on PgBouncer's server connections"
    assert p["DEFAULT_POOL_SIZE"] + p["RESERVE_POOL_SIZE"] <= p["MAX_DB_CONNECTIONS"]


def test_pgbouncer_takes_every_api_pool_as_clients():
    clients, limit = pgbouncer_clients(ALL)
    assert clients <= limit, (
        f"the API pods' pools may open {clients} client connections to one PgBouncer; "
        f"its MAX_CLIENT_CONN is {limit}"
    )


# --- the arithmetic answers to each number it counts -------------------------------------


def changed(objs: list[dict], kind: str, name: str, path: tuple, value) -> list[dict]:
    objs = copy.deepcopy(objs)
    node = one(objs, kind, name)
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return objs


def test_each_term_counts():
    before = direct_demand(BASE).total
    hpa_max = one(BASE, "HorizontalPodAutoscaler", API)["spec"]["maxReplicas"]
    more_pods = changed(BASE, "HorizontalPodAutoscaler", API, ("spec", "maxReplicas"), hpa_max + 1)
    data = one(BASE, "ConfigMap", CONFIG)["data"]
    pool, extra = int(data["DB_POOL_SIZE"]), int(data["DB_MAX_OVERFLOW"])
    bigger_pool = changed(BASE, "ConfigMap", CONFIG, ("data", "DB_POOL_SIZE"), str(pool + 1))
    overflow = changed(BASE, "ConfigMap", CONFIG, ("data", "DB_MAX_OVERFLOW"), str(extra + 1))
    no_cache = changed(BASE, "ConfigMap", CONFIG, ("data", "CACHE_ENABLED"), "false")
    surge = changed(BASE, "Deployment", API, ("spec", "strategy", "rollingUpdate", "maxSurge"), 2)
    pods, _ = api_peak_pods(BASE)  # the HPA's maximum + 1 surging + 1 draining
    s = api_settings(BASE)
    per_pod = s.db_pool_size + s.db_max_overflow + 1
    assert direct_demand(more_pods).total == before + per_pod
    assert direct_demand(bigger_pool).total == before + pods
    assert direct_demand(overflow).total == before + pods
    assert direct_demand(no_cache).total == before - pods
    assert direct_demand(surge).total == before + 2 * per_pod
    others = ("metadata", "annotations", f"{ANNOTATION}postgres-other-clients")
    one_more = str(budget(BASE).other_clients + 1)
    assert direct_demand(changed(BASE, "ConfigMap", CONFIG, others, one_more)).total == before + 1
    # PgBouncer: replicas + 1 surging + 1 draining pods at the peak, each opening at most
    # min(DEFAULT_POOL_SIZE + RESERVE_POOL_SIZE, MAX_DB_CONNECTIONS) server connections.
    bouncer = one(ALL, "Deployment", PGBOUNCER)["spec"]
    bouncers = bouncer["replicas"] + 2 * bouncer["strategy"]["rollingUpdate"]["maxSurge"]
    through, cap = pgbouncer_demand(ALL).total, pgbouncer_settings(ALL)["MAX_DB_CONNECTIONS"]
    wider = str(cap + 1)
    assert pgbouncer_demand(bouncer_env(DEFAULT_POOL_SIZE=wider)).total == through  # capped
    assert pgbouncer_demand(bouncer_env(RESERVE_POOL_SIZE="1")).total == through  # capped
    raised = bouncer_env(DEFAULT_POOL_SIZE=wider, MAX_DB_CONNECTIONS=wider)
    assert pgbouncer_demand(raised).total == through + bouncers


def bouncer_env(**values: str) -> list[dict]:
    env = container(one(ALL, "Deployment", PGBOUNCER))["env"]
    assert set(values) <= {v["name"] for v in env}, values
    env = [v | {"value": values[v["name"]]} if v["name"] in values else v for v in env]
    path = ("spec", "template", "spec", "containers", 0, "env")
    return changed(ALL, "Deployment", PGBOUNCER, path, env)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data", "DB_POOL_SIZE"), "30"),
        (("metadata", "annotations", f"{ANNOTATION}postgres-max-connections"), "80"),
    ],
)
def test_an_overflow_is_caught(path, value):
    broken = changed(BASE, "ConfigMap", CONFIG, path, value)
    assert not direct_demand(broken).fits
    assert not pgbouncer_required(broken)

"""The manifest and consistency checks of .ci/deploy-lint (run with its venv's Python).

1. Every Kubernetes manifest under deploy/kubernetes/ against the schemas of the Kubernetes
   versions named on the command line (kubernetes-validate's bundled schemas, strict:
   unknown fields fail). The Gateway API's HTTPRoute is a CRD those schemas lack: it is
   validated against deploy/kubernetes/schemas/httproute-v1.json, the project's own subset
   of the CRD. A kind with no schema at all fails instead of passing with a warning.
2. kustomization.yaml: every resource it lists exists, and every manifest in the folder is
   either listed or one of the documented alternatives.
3. The contract between the files: the session header that nginx, Envoy and the HTTPRoute
   route on; the probes; the shutdown arithmetic (terminationGracePeriodSeconds longer than
   preStop + drain + in-flight grace); the queue-depth metric of the autoscaler variant and
   of the Prometheus adapter rule.

Prints one line per problem, naming the file, and exits 1 if there was any.
"""

import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kubernetes_validate_utils

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
HTTPROUTE_SCHEMA = KUBE / "schemas" / "httproute-v1.json"
NGINX = ROOT / "deploy" / "nginx" / "qwen3guard.conf"
ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"

SESSION_HEADER = "x-qwen3guard-session"
QUEUE_METRIC = "qwen3guard_queue_depth"
# Manifests kept beside the kustomization but not in it (docs/DEPLOY.md says why).
UNLISTED = {"hpa-queue-depth.yaml", "prometheus-adapter-rules.yaml"}

problems = []


def problem(path, message):
    problems.append(f"{path.relative_to(ROOT)}: {message}")


def documents(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        problem(path, f"not YAML: {error}")
        return []


def at(value, *keys):
    """value[k0][k1]..., or None where a key or index is missing."""
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def validate_manifests(versions):
    try:
        route_schema = json.loads(HTTPROUTE_SCHEMA.read_text())
        jsonschema.Draft202012Validator.check_schema(route_schema)
        route_validator = jsonschema.Draft202012Validator(route_schema)
    except (ValueError, jsonschema.SchemaError) as error:
        problem(HTTPROUTE_SCHEMA, f"not a valid JSON schema: {error}")
        route_validator = None
    manifests = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = documents(path)
        if not docs:
            problem(path, "no Kubernetes object in it")
        manifests[path.name] = docs
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                problem(path, "a document without kind or apiVersion")
                continue
            name = f"{doc['kind']}/{at(doc, 'metadata', 'name')}"
            if doc["apiVersion"].startswith("gateway.networking.k8s.io/"):
                if doc["kind"] != "HTTPRoute":
                    problem(path, f"{name}: no schema here for this Gateway API kind")
                    continue
                if route_validator is None:
                    continue
                for error in route_validator.iter_errors(doc):
                    where = ".".join(str(p) for p in error.absolute_path) or "(top)"
                    problem(path, f"{name}: {where}: {error.message} "
                                  f"(schema {HTTPROUTE_SCHEMA.relative_to(ROOT)})")
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    where = ".".join(str(p) for p in error.path) or "(top)"
                    problem(path, f"{name}: Kubernetes {version}: {where}: {error.message}")
                except kubernetes_validate.SchemaNotFoundError as error:
                    problem(path, f"{name}: {error.message}")
                except kubernetes_validate_utils.VersionNotSupportedError as error:
                    problem(path, error.message)
    return manifests


def check_kustomization(manifests):
    path = KUBE / "kustomization.yaml"
    docs = documents(path)
    if len(docs) != 1 or at(docs[0], "kind") != "Kustomization":
        problem(path, "expected one Kustomization")
        return
    listed = at(docs[0], "resources") or []
    for resource in listed:
        if not (KUBE / resource).is_file():
            problem(path, f"resource {resource} does not exist")
    for name in sorted(set(manifests) - set(listed) - UNLISTED):
        problem(path, f"{name} is neither listed nor a documented alternative")
    for name in sorted(UNLISTED & set(listed)):
        problem(path, f"{name} is listed, but is an alternative kept out on purpose")
    images = {at(i, "name") for i in at(docs[0], "images") or []}
    for doc in manifests.get("deployment.yaml", []):
        for container in at(doc, "spec", "template", "spec", "containers") or []:
            if container.get("image") not in images:
                problem(path, f"no `images` entry for {container.get('image')!r}")


def one(manifests, file, kind):
    found = [d for d in manifests.get(file, []) if at(d, "kind") == kind]
    if len(found) != 1:
        problem(KUBE / file, f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def check_deployment(manifests):
    path = KUBE / "deployment.yaml"
    deployment = one(manifests, "deployment.yaml", "Deployment")
    if deployment is None:
        return
    pod = at(deployment, "spec", "template", "spec")
    containers = at(pod, "containers") or [{}]
    container = containers[0]
    env = {e.get("name"): e for e in container.get("env", [])}

    def env_int(name, default):
        value = at(env, name, "value")
        return int(value) if value is not None else default

    if at(env, "QWEN3GUARD_HOST", "value") != "0.0.0.0":
        problem(path, "QWEN3GUARD_HOST must be 0.0.0.0 in a container")
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    if ports != [8080] or env_int("QWEN3GUARD_PORT", 8080) != 8080:
        problem(path, "the server listens on 8080 (containerPort and QWEN3GUARD_PORT)")
    for probe, want in (("readinessProbe", "/health"), ("livenessProbe", "/live"),
                        ("startupProbe", "/health")):
        got = at(container, probe, "httpGet", "path")
        if got != want:
            problem(path, f"{probe} must GET {want}, not {got}")
    stop = at(container, "lifecycle", "preStop", "exec", "command")
    if not stop or stop[0] != "sleep" or not str(stop[-1]).isdigit():
        problem(path, "preStop must be a plain `sleep N`")
        stop = ["sleep", "0"]
    drain = env_int("QWEN3GUARD_DRAIN_SECONDS", 30)
    grace = env_int("QWEN3GUARD_SHUTDOWN_GRACE_SECS", 30)
    needed = int(stop[-1]) + drain + grace
    period = at(pod, "terminationGracePeriodSeconds") or 30
    if period <= needed:
        problem(path, f"terminationGracePeriodSeconds {period} is not longer than preStop "
                      f"{stop[-1]} + drain {drain} + shutdown grace {grace} = {needed}")
    if "QWEN3GUARD_REPLICA_ID" not in env:
        problem(path, "QWEN3GUARD_REPLICA_ID should name the pod")
    if at(pod, "affinity", "podAntiAffinity") is None:
        problem(path, "no podAntiAffinity")


def check_routing(manifests):
    route = one(manifests, "httproute.yaml", "HTTPRoute")
    for rule in at(route, "spec", "rules") or []:
        persistence = rule.get("sessionPersistence") or {}
        if persistence.get("type") != "Header" or persistence.get("sessionName") != SESSION_HEADER:
            problem(KUBE / "httproute.yaml",
                    f"every rule needs sessionPersistence of type Header on {SESSION_HEADER}")

    nginx = NGINX.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in nginx.splitlines())
    hashed = re.search(r"^\s*hash\s+(\$\S+)\s+consistent\s*;", code, re.M)
    if not hashed:
        problem(NGINX, "the upstream needs `hash KEY consistent;`")
    elif hashed.group(1) != "$http_x_qwen3guard_session":
        # The key may be a map whose default is the header.
        mapped = re.search(r"map\s+\$http_x_qwen3guard_session\s+" + re.escape(hashed.group(1))
                           + r"\s*\{[^}]*default\s+\$http_x_qwen3guard_session\s*;", code)
        if not mapped:
            problem(NGINX, f"the hash key {hashed.group(1)} is not the session header")
    for directive in ("proxy_next_upstream", "proxy_buffering off", "proxy_read_timeout"):
        if not re.search(rf"^\s*{directive}\b", code, re.M):
            problem(NGINX, f"no `{directive}`")

    docs = documents(ENVOY)
    envoy = docs[0] if docs else {}
    cluster = at(envoy, "static_resources", "clusters", 0) or {}
    if cluster.get("lb_policy") not in ("RING_HASH", "MAGLEV"):
        problem(ENVOY, "the cluster needs lb_policy RING_HASH or MAGLEV")
    if at(cluster, "health_checks", 0, "http_health_check", "path") != "/health":
        problem(ENVOY, "the cluster's health check must GET /health")
    manager = at(envoy, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0,
                 "typed_config") or {}
    routes = [r for host in at(manager, "route_config", "virtual_hosts") or []
              for r in host.get("routes", [])]
    if not routes:
        problem(ENVOY, "no routes")
    for route_entry in routes:
        action = route_entry.get("route") or {}
        headers = [at(h, "header", "header_name") for h in action.get("hash_policy", [])]
        if headers != [SESSION_HEADER]:
            problem(ENVOY, f"route {at(route_entry, 'match')}: hash_policy must be the "
                           f"header {SESSION_HEADER}")
        if action.get("cluster") != cluster.get("name"):
            problem(ENVOY, f"route {at(route_entry, 'match')}: not to the hashed cluster")


def check_queue_metric(manifests):
    hpa = one(manifests, "hpa-queue-depth.yaml", "HorizontalPodAutoscaler")
    names = [at(m, "pods", "metric", "name") for m in at(hpa, "spec", "metrics") or []]
    if QUEUE_METRIC not in names:
        problem(KUBE / "hpa-queue-depth.yaml", f"no Pods metric {QUEUE_METRIC}")
    path = KUBE / "prometheus-adapter-rules.yaml"
    config_map = one(manifests, "prometheus-adapter-rules.yaml", "ConfigMap")
    try:
        config = yaml.safe_load(at(config_map, "data", "config.yaml") or "")
    except yaml.YAMLError as error:
        problem(path, f"data.config.yaml is not YAML: {error}")
        return
    rules = at(config, "rules") or []
    served = [at(r, "name", "as") for r in rules]
    if QUEUE_METRIC not in served:
        problem(path, f"no rule serving {QUEUE_METRIC}")
    for rule in rules:
        for key in ("seriesQuery", "resources", "metricsQuery"):
            if key not in rule:
                problem(path, f"rule {at(rule, 'name', 'as')}: no {key}")
        if "<<.GroupBy>>" not in rule.get("metricsQuery", ""):
            problem(path, "metricsQuery must group by <<.GroupBy>> (one value per pod)")


def main():
    versions = sys.argv[1:] or [kubernetes_validate_utils.latest_version()]
    manifests = validate_manifests(versions)
    check_kustomization(manifests)
    check_deployment(manifests)
    check_routing(manifests)
    check_queue_metric(manifests)
    for line in problems:
        print(f"deploy-lint: {line}")
    if not problems:
        print(f"deploy-lint: {len(manifests)} manifest files valid for Kubernetes "
              f"{', '.join(versions)}; routing, probes and shutdown consistent")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

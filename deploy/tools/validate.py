#!/usr/bin/env python3
"""Offline checks of keymesh's deploy/ tree; run by scripts/validate-deploy.

Usage: validate.py RENDERED_DIR

RENDERED_DIR holds one `<overlay>.yaml` per kustomize overlay, as rendered by
`kustomize build` / `kubectl kustomize`. Checks, all reported together:

1. Every rendered object validates against the Kubernetes OpenAPI schemas that
   ship with the kubernetes-validate package (strict: unknown fields are errors),
   for each version in K8S_VERSIONS.
2. keymesh rules the schemas cannot express (deploy/ conventions, STYLE.md 18):
   pod/container hardening, requests and limits, probes (gRPC for worker and
   limiter), preStop sleep shorter than the grace period, TOKIO_WORKER_THREADS
   from the CPU limit, each service's workload kind (WORKLOADS: the limiter is a
   StatefulSet), headless worker and limiter Services (the limiter's governs its
   StatefulSet), PDB/HPA targets that exist, ConfigMaps/Secrets referenced by
   pods rendered (or created out of band, see EXTERNAL), the workers' key-status
   file (KEYMESH_KEY_STATUS_FILE: mounted from a stable-named ConfigMap holding
   {"disabled": [...]}), NetworkPolicy default deny.
3. The edge.toml in every edge ConfigMap: TOML, only fields documented in
   deploy/edge.toml (the edge denies unknown fields), the edge's own validation
   rules, every file it names mounted into the edge container, dns+http://
   workers naming a headless Service, and `limiters` listing exactly the
   limiter StatefulSet's pods (rate-limiter-0 .. replicas-1) by their DNS names,
   and service mTLS everywhere ([grpc_tls] in the edge with its files mounted,
   all three KEYMESH_GRPC_TLS_* files mounted in worker and limiter, no
   insecure_plaintext_grpc / KEYMESH_INSECURE_PLAINTEXT_GRPC, kubelet gRPC
   probes on the plaintext health-only port, never on the mTLS port). [huawei]
   (components/huawei) on both ends or neither: its fields and ranges, the store
   URL from a mounted Secret (store_url_file; no password in a ConfigMap, no
   per-pod SQLite), its files mounted, a domain-key Job with the workers' HSM
   settings and label, and an edge egress policy (if any) that still reaches
   DNS, workers, limiters and PostgreSQL. limiter.toml and policy.toml parse;
   the keystores Secret is JSON. Every namespaced object is in keymesh.
4. deploy/observability: the Grafana dashboard is JSON with panels and targets,
   the alert rules have Prometheus' rule-file structure, and every metric
   either names a metric the services record (grepped from services/ and crates/)
   or is on EXTERNAL_METRICS.
5. services/*/Dockerfile have the expected multi-stage shape (no engine here).

Exit status 1 with one line per problem, 0 when clean.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# The oldest Kubernetes minor we support and the newest the validator ships.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

# Objects pods may reference that are created out of band (certificates).
EXTERNAL = {
    ("Secret", "edge-tls"),
    ("Secret", "edge-ingress-tls"),
    ("ConfigMap", "edge-client-ca"),
    # Service mTLS, one identity per service: tls.crt, tls.key, ca.crt, made
    # out of band (keymeshctl pki init) or by cert-manager (components/cert-manager;
    # check_cert_manager ties each to its identity).
    ("Secret", "keymesh-edge-grpc-tls"),
    ("Secret", "keymesh-crypto-worker-grpc-tls"),
    ("Secret", "keymesh-rate-limiter-grpc-tls"),
}

NAMESPACE = "keymesh"

# components/huawei: what the edge mounts for [huawei] (Secret with the store
# URL, ConfigMap with the X-Auth-Token public key), and the Job that creates
# the HSM domain key (crates/keymeshctl: default label keymesh-domain-v1).
HUAWEI_VOLUMES = {("Secret", "keymesh-store"), ("ConfigMap", "huawei-token-public-key")}
DEFAULT_DOMAIN_KEY_LABEL = "keymesh-domain-v1"
POSTGRES_PORT = 5432
# A userinfo with a password: postgres://user:password@host/...
URL_PASSWORD = re.compile(r"^[a-z]+://[^/@:]*:[^/@]*@")

# Worker and limiter flags for service mTLS: all three, required (docs/ARCHITECTURE.md).
GRPC_TLS_ENV = ("KEYMESH_GRPC_TLS_CERT", "KEYMESH_GRPC_TLS_KEY", "KEYMESH_GRPC_TLS_CA")
# The plaintext health-only listener each gRPC service's probes use.
HEALTH_LISTEN_ENV = {"crypto-worker": "KEYMESH_WORKER_HEALTH_LISTEN", "rate-limiter": "KEYMESH_LIMITER_HEALTH_LISTEN"}

# Metrics from outside keymesh that the alerts may use.
EXTERNAL_METRICS = {"up", "kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}

# Services whose containers run a tokio runtime (all of ours), and the workload
# kind each runs as: the limiter replicas need stable DNS names (edge.toml lists
# each one), hence a StatefulSet.
WORKLOADS = {"edge": "Deployment", "crypto-worker": "Deployment", "rate-limiter": "StatefulSet"}
SERVICE_CONTAINERS = set(WORKLOADS)
GRPC_SERVICES = {"crypto-worker", "rate-limiter"}
LONG_RUNNING = ("Deployment", "StatefulSet")

# kustomize's content-hash suffix on generated names (absent with disableNameSuffixHash).
HASH_SUFFIX = re.compile(r"-[2-9bcdfghkmt]{10}$")

errors: list[str] = []


def err(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")


# --------------------------------------------------------------------------- 1


# Mesh identities (crates/common/src/mesh_identity.rs) by the Secret the base
# mounts into each service.
MESH_IDENTITIES = {
    "keymesh-edge-grpc-tls": "spiffe://keymesh/edge",
    "keymesh-crypto-worker-grpc-tls": "spiffe://keymesh/crypto-worker",
    "keymesh-rate-limiter-grpc-tls": "spiffe://keymesh/rate-limiter",
}


def check_cert_manager(overlay: str, docs: list[dict]) -> None:
    """cert-manager objects (no schema ships with kubernetes-validate): the
    shape keymesh relies on, and one Certificate per mesh Secret carrying
    exactly that service's identity, from an Issuer that is rendered."""
    cm = [d for d in docs if str(d.get("apiVersion", "")).startswith("cert-manager.io/")]
    if not cm:
        return
    issuers = {d["metadata"]["name"] for d in cm if d["kind"] == "Issuer"}
    by_secret = {}
    for d in cm:
        where = f"{overlay}: {d['kind']}/{d['metadata']['name']}"
        if d["apiVersion"] != "cert-manager.io/v1" or d["kind"] not in ("Issuer", "Certificate"):
            err(where, "expected cert-manager.io/v1 Issuer or Certificate")
            continue
        if d["kind"] == "Certificate":
            spec = d.get("spec", {})
            ref = spec.get("issuerRef", {})
            if ref.get("kind", "Issuer") != "Issuer" or ref.get("name") not in issuers:
                err(where, f"issuerRef {ref} is not a rendered Issuer")
            if not spec.get("secretName"):
                err(where, "secretName missing")
            by_secret[spec.get("secretName")] = (where, spec)
    for secret, uri in MESH_IDENTITIES.items():
        if secret not in by_secret:
            err(overlay, f"cert-manager is used but no Certificate writes Secret/{secret}")
            continue
        where, spec = by_secret[secret]
        if spec.get("uris") != [uri]:
            err(where, f"uris must be [{uri!r}]: the peers pin that identity")
        usages = set(spec.get("usages", []))
        if not {"server auth", "client auth"} <= usages:
            err(where, "usages need server auth and client auth")


def validate_schemas(overlay: str, docs: list[dict]) -> None:
    check_cert_manager(overlay, docs)
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith("cert-manager.io/"):
            continue  # CRDs: checked by check_cert_manager
        name = f"{overlay}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                err(name, f"k8s {version} schema: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                err(name, f"k8s {version}: {e.message}")


# --------------------------------------------------------------------------- 2


def pod_specs(doc: dict):
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def check_workloads(overlay: str, docs: list[dict]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE:
            err(overlay, f"{d['kind']}/{d['metadata']['name']} is not in namespace {NAMESPACE} "
                         "(set `namespace:` in the overlay: components' objects miss the base's)")
    for name, kind in sorted(WORKLOADS.items()):
        if name not in by_kind.get(kind, {}):
            err(overlay, f"no {kind} {name}")
        if name not in by_kind.get("Service", {}):
            err(overlay, f"no Service {name}")

    for d in docs:
        spec = pod_specs(d)
        if spec is None:
            continue
        where = f"{overlay}: {d['kind']}/{d['metadata']['name']}"
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            err(where, "pod securityContext.runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(where, "pod seccompProfile must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            err(where, "automountServiceAccountToken must be false (no pod talks to the API)")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        mounts_ok = {v["name"] for v in spec.get("volumes", [])}
        for v in spec.get("volumes", []):
            ref = None
            if "configMap" in v:
                ref = ("ConfigMap", v["configMap"]["name"])
            elif "secret" in v:
                ref = ("Secret", v["secret"]["secretName"])
            elif "persistentVolumeClaim" in v:
                ref = ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
            if ref and ref not in EXTERNAL and ref[1] not in by_kind.get(ref[0], {}):
                err(where, f"volume {v['name']} references {ref[0]}/{ref[1]}, which is not rendered")
        for c in spec.get("initContainers", []) + spec["containers"]:
            cw = f"{where}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                err(cw, "allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(cw, "readOnlyRootFilesystem must be true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                err(cw, "capabilities.drop must be [ALL]")
            res = c.get("resources", {})
            for k in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(k, {}):
                        err(cw, f"resources.{k}.{r} missing")
            for m in c.get("volumeMounts", []):
                if m["name"] not in mounts_ok:
                    err(cw, f"volumeMount {m['name']} has no volume")
                if "subPath" in m:
                    err(cw, f"volumeMount {m['name']}: subPath blocks ConfigMap/Secret updates (hot reload)")
            for e in c.get("envFrom", []):
                ref = e.get("configMapRef", {}).get("name")
                if ref and ref not in by_kind.get("ConfigMap", {}):
                    err(cw, f"envFrom ConfigMap/{ref} is not rendered")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in by_kind.get("Secret", {}):
                    err(cw, f"env {e['name']} references Secret/{ref['name']}, which is not rendered")
            if d["kind"] not in LONG_RUNNING:
                continue
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    err(cw, f"{probe} missing")
            if c["name"] in GRPC_SERVICES:
                tls_env = grpc_tls_env(c)
                env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
                if len(tls_env) != len(GRPC_TLS_ENV):
                    err(cw, f"set all of {', '.join(GRPC_TLS_ENV)}: the service refuses to start without mesh mTLS")
                if "KEYMESH_INSECURE_PLAINTEXT_GRPC" in env:
                    err(cw, "KEYMESH_INSECURE_PLAINTEXT_GRPC: plaintext gRPC is for development, not deploy/")
                mounts = mount_dirs(c, spec)
                for k, f in sorted(tls_env.items()):
                    if not f.startswith("/") or not file_is_mounted(f, mounts):
                        err(cw, f"{k}={f}: no volume of the container provides it")
                grpc_port = int(env.get("KEYMESH_WORKER_LISTEN" if c["name"] == "crypto-worker" else "KEYMESH_LIMITER_LISTEN", ":0").rsplit(":", 1)[1])
                health = env.get(HEALTH_LISTEN_ENV[c["name"]], "")
                health_port = int(health.rsplit(":", 1)[1]) if ":" in health else None
                if health_port is None:
                    err(cw, f"{HEALTH_LISTEN_ENV[c['name']]} unset: the kubelet's gRPC probe has no client "
                            "certificate and needs the plaintext health-only listener")
                elif health_port not in [p["containerPort"] for p in c.get("ports", [])]:
                    err(cw, f"health-only port {health_port} is not a containerPort")
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    g = c.get(probe, {}).get("grpc")
                    if g is None:
                        err(cw, f"{probe} must be a native gRPC probe (grpc.health.v1) on the health-only port")
                    elif g.get("port") == grpc_port or g.get("port") != health_port:
                        err(cw, f"{probe}: gRPC probe on port {g.get('port')}, not the health-only port "
                                f"{health_port} (the mTLS port refuses a caller without the edge identity)")
            if c["name"] in SERVICE_CONTAINERS:
                env = {e["name"]: e for e in c.get("env", [])}
                tw = env.get("TOKIO_WORKER_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
                if tw.get("resource") != "limits.cpu" or tw.get("containerName") != c["name"]:
                    err(cw, "TOKIO_WORKER_THREADS must come from this container's limits.cpu")
                cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                if len(cmd) != 2 or cmd[0] != "sleep" or not cmd[1].isdigit():
                    err(cw, 'preStop must be exec ["sleep", "<seconds>"] (endpoint removal before SIGTERM)')
                elif not 0 < int(cmd[1]) < grace:
                    err(cw, f"preStop sleep {cmd[1]} s must be shorter than terminationGracePeriodSeconds {grace}")
                elif grace - int(cmd[1]) < 5:
                    err(cw, f"grace period {grace} s leaves under 5 s to drain after the preStop sleep")

    for name in ("crypto-worker", "rate-limiter"):
        svc = by_kind.get("Service", {}).get(name)
        if svc and svc["spec"].get("clusterIP") != "None":
            err(overlay, f"Service/{name} must be headless (clusterIP: None): one DNS record per pod")
    for name, sts in by_kind.get("StatefulSet", {}).items():
        gov = by_kind.get("Service", {}).get(sts["spec"].get("serviceName", ""))
        if gov is None or gov["spec"].get("clusterIP") != "None":
            err(overlay, f"StatefulSet/{name}: serviceName must name a rendered headless Service (pod DNS names)")
        elif not (sel := gov["spec"].get("selector")) or any(
            sts["spec"]["template"]["metadata"]["labels"].get(k) != v for k, v in sel.items()
        ):
            err(overlay, f"StatefulSet/{name}: Service/{gov['metadata']['name']} does not select its pods")
    check_key_status(overlay, by_kind)
    for kind in ("HorizontalPodAutoscaler",):
        for name, h in by_kind.get(kind, {}).items():
            tgt = h["spec"]["scaleTargetRef"]
            if tgt["name"] not in by_kind.get(tgt["kind"], {}):
                err(overlay, f"{kind}/{name} targets missing {tgt['kind']}/{tgt['name']}")
    for want in ("edge", "crypto-worker"):
        if want not in by_kind.get("HorizontalPodAutoscaler", {}):
            err(overlay, f"no HorizontalPodAutoscaler {want}")
    if "crypto-worker" not in by_kind.get("PodDisruptionBudget", {}):
        err(overlay, "no PodDisruptionBudget crypto-worker")
    for name, p in by_kind.get("PodDisruptionBudget", {}).items():
        sel = p["spec"]["selector"]["matchLabels"]
        if not any(
            all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
            for kind in LONG_RUNNING
            for d in by_kind.get(kind, {}).values()
        ):
            err(overlay, f"PodDisruptionBudget/{name} selects no Deployment's or StatefulSet's pods")
    nps = by_kind.get("NetworkPolicy", {})
    if not any(n["spec"].get("podSelector") == {} and "Ingress" in n["spec"].get("policyTypes", []) and not n["spec"].get("ingress") for n in nps.values()):
        err(overlay, "no default-deny ingress NetworkPolicy")
    for target, port in (("crypto-worker", 7100), ("rate-limiter", 7200)):
        pols = [n for n in nps.values() if n["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target]
        if not pols:
            err(overlay, f"no NetworkPolicy selecting {target}")
        for n in pols:
            for rule in n["spec"].get("ingress", []):
                ports = [p.get("port") for p in rule.get("ports", [])]
                if ports and port not in ports and "grpc" not in ports:
                    continue  # e.g. Prometheus on the metrics port
                peers = rule.get("from")
                if not peers or any(
                    peer.get("podSelector", {}).get("matchLabels") != {"app.kubernetes.io/name": "edge"}
                    or "namespaceSelector" in peer
                    for peer in peers
                ):
                    err(overlay, f"NetworkPolicy/{n['metadata']['name']}: only the edge may reach {target}'s gRPC port {port}")
    check_configs(overlay, by_kind)


def check_key_status_json(where: str, text: str) -> None:
    """crates/contracts/src/key_status.rs: {"disabled": [ids]}, unknown fields denied."""
    try:
        ks = json.loads(text)
    except json.JSONDecodeError as e:
        err(where, f"not JSON: {e} (a worker refuses to start on an unreadable key-status file)")
        return
    if not isinstance(ks, dict) or set(ks) - {"disabled"}:
        err(where, 'key-status file must be {"disabled": [...]} and nothing else (the worker denies unknown fields)')
    elif not isinstance(ks.get("disabled", []), list) or not all(isinstance(k, str) for k in ks.get("disabled", [])):
        err(where, '"disabled" must be a list of key ids (strings)')


def check_key_status(overlay: str, by_kind: dict[str, dict[str, dict]]) -> None:
    """The workers read KEYMESH_KEY_STATUS_FILE from a mounted ConfigMap, so
    disabling a key is a ConfigMap edit that reaches every worker."""
    dep = by_kind.get("Deployment", {}).get("crypto-worker")
    if not dep:
        return
    spec = dep["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if c["name"] == "crypto-worker"), None)
    if c is None:
        err(overlay, "Deployment/crypto-worker has no crypto-worker container")
        return
    where = f"{overlay}: Deployment/crypto-worker/crypto-worker"
    path = next((e.get("value") for e in c.get("env", []) if e["name"] == "KEYMESH_KEY_STATUS_FILE"), None)
    if not path:
        err(where, "KEYMESH_KEY_STATUS_FILE not set: `keymeshctl key disable` could not reach the workers")
        return
    mounts = mount_dirs(c, spec)
    parent, _, fname = path.rpartition("/")
    vol = mounts.get(parent)
    if not path.startswith("/") or vol is None or not file_is_mounted(path, mounts):
        err(where, f"KEYMESH_KEY_STATUS_FILE {path} is not provided by a volume of the container")
        return
    m = next(m for m in c["volumeMounts"] if m["mountPath"].rstrip("/") == parent)
    if m.get("readOnly") is not True:
        err(where, f"volumeMount {m['name']} (key status) must be readOnly")
    name = vol.get("configMap", {}).get("name")
    if not name:
        err(where, f"KEYMESH_KEY_STATUS_FILE {path} must come from a ConfigMap volume")
        return
    if HASH_SUFFIX.search(name):
        err(where, f"ConfigMap/{name} (key status) needs a stable name (disableNameSuffixHash): "
                   "edits must reach the mounted file, not roll the workers")
    items = vol["configMap"].get("items")
    key = next((i["key"] for i in items if i["path"] == fname), None) if items else fname
    cm = by_kind.get("ConfigMap", {}).get(name)
    if cm is None:
        return  # reported by the "referenced ConfigMap is rendered" rule
    if key not in cm.get("data", {}):
        err(where, f"ConfigMap/{name} has no key {key!r} for KEYMESH_KEY_STATUS_FILE")
    else:
        check_key_status_json(f"{overlay}: ConfigMap/{name}/{key}", cm["data"][key])


# --------------------------------------------------------------------------- 3


def documented_edge_fields() -> tuple[set[str], dict[str, set[str]]]:
    """Top-level field names and fields per [section] in deploy/edge.toml, commented or not."""
    top: set[str] = set()
    sections: dict[str, set[str]] = {}
    section = None
    for line in (DEPLOY / "edge.toml").read_text().splitlines():
        s = line.lstrip("# ").strip()
        if re.fullmatch(r"\[[a-z_.]+\]", s):
            section = s[1:-1]
            sections.setdefault(section, set())
            continue
        m = re.match(r"([a-z_]+)\s*=", s)
        if m:
            (sections[section] if section else top).add(m.group(1))
    return top, sections


def grpc_tls_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", []) if e["name"] in GRPC_TLS_ENV}


def mount_dirs(container: dict, spec: dict) -> dict[str, dict]:
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"].rstrip("/"): vols.get(m["name"], {}) for m in container.get("volumeMounts", [])}


def file_is_mounted(path: str, mounts: dict[str, dict]) -> bool:
    parent, _, fname = path.rpartition("/")
    vol = mounts.get(parent)
    if vol is None:
        return False
    items = (vol.get("secret") or vol.get("configMap") or {}).get("items")
    return items is None or any(i["path"] == fname for i in items)


def url_host_port(url: str, scheme: str) -> tuple[str, int] | None:
    m = re.fullmatch(rf"{re.escape(scheme)}([A-Za-z0-9.-]+):(\d+)/?", url)
    return (m.group(1), int(m.group(2))) if m else None


def service_ports(svc: dict) -> set:
    return {p.get("port") for p in svc["spec"].get("ports", [])}


def check_edge_endpoints(where: str, cfg: dict, by_kind: dict[str, dict[str, dict]]) -> None:
    """services/edge/src/config.rs validation of workers/limiter(s), plus what
    only the rendered objects can tell: the names point at the right Services."""
    services = by_kind.get("Service", {})
    for w in cfg.get("workers", []):
        if w.startswith("dns+http://"):
            hp = url_host_port(w, "dns+http://")
            if hp is None:
                err(where, f"edge.toml: workers: {w!r}: dns+http:// needs name:port")
                continue
            svc = services.get(hp[0].split(".")[0])
            if svc is None:
                continue  # a name outside this render (another namespace, external)
            if svc["spec"].get("clusterIP") != "None":
                err(where, f"edge.toml: workers: {w!r} names Service/{svc['metadata']['name']}, which is not headless "
                           "(one ClusterIP = one worker to the edge)")
            if hp[1] not in service_ports(svc):
                err(where, f"edge.toml: workers: {w!r}: port {hp[1]} is not a port of Service/{svc['metadata']['name']}")
        elif not re.fullmatch(r"https?://[^/\s]+(/.*)?", w):
            err(where, f"edge.toml: workers: {w!r}: expected http://host:port or dns+http://name:port")
    one, many = cfg.get("limiter"), cfg.get("limiters", [])
    if (one is None) == (not many):
        err(where, "edge.toml: set exactly one of limiter and limiters")
    if len(many) > 64:
        err(where, "edge.toml: limiters: at most 64 replicas")
    urls = many or ([one] if one else [])
    if len(set(urls)) != len(urls):
        err(where, "edge.toml: limiters: a URL is listed more than once")
    sts = by_kind.get("StatefulSet", {}).get("rate-limiter")
    ordinals = []
    for u in urls:
        hp = url_host_port(u, "http://") or url_host_port(u, "https://")
        if hp is None:
            err(where, f"edge.toml: limiter {u!r}: expected http://host:port")
            continue
        if sts is None:
            continue
        labels = hp[0].split(".")
        gov = sts["spec"].get("serviceName")
        m = re.fullmatch(r"rate-limiter-(\d+)", labels[0])
        if not m or len(labels) < 2 or labels[1] != gov:
            err(where, f"edge.toml: limiter {u!r} is not a rate-limiter pod's DNS name "
                       f"(rate-limiter-N.{gov}): each URL must be one replica")
            continue
        ordinals.append(int(m.group(1)))
        if gov in services and hp[1] not in service_ports(services[gov]):
            err(where, f"edge.toml: limiter {u!r}: port {hp[1]} is not a port of Service/{gov}")
    if sts is not None and ordinals:
        replicas = sts["spec"].get("replicas", 1)
        if sorted(ordinals) != list(range(replicas)):
            err(where, f"edge.toml: limiters lists replicas {sorted(ordinals)}, StatefulSet/rate-limiter runs "
                       f"{list(range(replicas))}: list every replica and only those")


def check_edge_toml(where: str, text: str, container: dict, spec: dict, by_kind: dict[str, dict[str, dict]]) -> None:
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        err(where, f"edge.toml is not TOML: {e}")
        return
    top, sections = documented_edge_fields()
    tls_fields = sections.get("tls", set())
    for k in cfg:
        if k not in top and k not in sections:
            err(where, f"edge.toml: unknown field {k!r} (not in deploy/edge.toml; the edge denies unknown fields)")
    for name, fields in sections.items():
        for k in toml_section(cfg, name) or ():
            if k not in fields and f"{name}.{k}" not in sections:
                err(where, f"edge.toml: unknown field {k!r} in [{name}] (not in deploy/edge.toml)")
    for k in ("workers", "keystores_file"):
        if k not in cfg:
            err(where, f"edge.toml: required field {k!r} missing")
    workers = cfg.get("workers", [])
    if not 1 <= len(workers) <= 10:
        err(where, "edge.toml: workers must list 1..=10 endpoints")
    if not 10 <= cfg.get("deadline_ms", 200) <= 60000:
        err(where, "edge.toml: deadline_ms must be 10..=60000")
    if not 100 <= cfg.get("worker_resolve_interval_ms", 2000) <= 60000:
        err(where, "edge.toml: worker_resolve_interval_ms must be 100..=60000")
    if cfg.get("shed_floor_ms", 5) >= cfg.get("deadline_ms", 200):
        err(where, "edge.toml: shed_floor_ms must be below deadline_ms")
    check_edge_endpoints(where, cfg, by_kind)
    pt, aad = cfg.get("max_plaintext_bytes", 32768), cfg.get("max_aad_bytes", 8192)
    if pt < 4300:
        err(where, "edge.toml: max_plaintext_bytes below the spec minimum 4300")
    if not 8192 <= aad <= 65535:
        err(where, "edge.toml: max_aad_bytes must be 8192..=65535")
    if cfg.get("max_body_bytes", 65536) < (pt + aad) * 4 // 3 + 8192:
        err(where, "edge.toml: max_body_bytes too small for the largest plaintext and AAD")
    if cfg.get("limiter_failure_policy", "open") not in ("open", "closed"):
        err(where, "edge.toml: limiter_failure_policy must be open or closed")
    files = [cfg.get("keystores_file"), cfg.get("policy_file")]
    tls = cfg.get("tls")
    if tls is not None:
        for k in tls:
            if k not in tls_fields:
                err(where, f"edge.toml: unknown [tls] field {k!r}")
        if ("client_ca_file" in tls) != ("client_subject_cn" in tls):
            err(where, "edge.toml: client_ca_file and client_subject_cn must be set together")
        files += [tls.get("cert_file"), tls.get("key_file"), tls.get("client_ca_file")]
    gtls = cfg.get("grpc_tls")
    if cfg.get("insecure_plaintext_grpc"):
        err(where, "edge.toml: insecure_plaintext_grpc is for development, not deploy/")
    if gtls is None:
        err(where, "edge.toml: [grpc_tls] missing: the edge refuses to start without mesh mTLS")
    else:
        for k in ("cert_file", "key_file", "ca_file"):
            if k not in gtls:
                err(where, f"edge.toml: [grpc_tls] needs {k}")
        files += [gtls.get("cert_file"), gtls.get("key_file"), gtls.get("ca_file")]
        for k in ("worker_identities", "limiter_identities"):
            if k in gtls and (not isinstance(gtls[k], list) or not gtls[k]):
                err(where, f"edge.toml: [grpc_tls] {k} must be a non-empty list")
    files += check_huawei(where, cfg, container, spec, by_kind)
    check_edge_egress(where, cfg, by_kind)
    mounts = mount_dirs(container, spec)
    for f in filter(None, files):
        if not f.startswith("/"):
            err(where, f"edge.toml: {f} should be absolute in a container")
        elif not file_is_mounted(f, mounts):
            err(where, f"edge.toml names {f}, which no volume of the edge container provides")
    port = int(cfg.get("listen", "127.0.0.1:8000").rsplit(":", 1)[1])
    if not cfg.get("listen", "").startswith(("0.0.0.0:", "[::]:")):
        err(where, "edge.toml: listen must be a wildcard address in a pod")
    if port not in [p["containerPort"] for p in container.get("ports", [])]:
        err(where, f"edge.toml listens on {port}, not a containerPort of the edge")


def toml_section(cfg: dict, name: str) -> dict | None:
    """cfg["huawei"]["quotas"] for "huawei.quotas"; None when absent."""
    v = cfg
    for part in name.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v if isinstance(v, dict) else None


def volume_ref(vol: dict) -> tuple[str, str] | None:
    if "secret" in vol:
        return ("Secret", vol["secret"].get("secretName", ""))
    if "configMap" in vol:
        return ("ConfigMap", vol["configMap"].get("name", ""))
    return None


def check_huawei(where: str, cfg: dict, container: dict, spec: dict, by_kind: dict[str, dict[str, dict]]) -> list:
    """[huawei] (services/edge/src/huawei/config.rs `problems`) and what
    components/huawei provides for it. Returns the files it names."""
    hw = cfg.get("huawei")
    mounts = mount_dirs(container, spec)
    mounted = {volume_ref(v) for v in mounts.values()} & HUAWEI_VOLUMES
    if hw is None:
        for kind, name in sorted(mounted):
            err(where, f"the edge mounts {kind}/{name} (components/huawei) but edge.toml has no [huawei]: "
                       "give the overlay an edge.toml with [huawei] (see overlays/ingress-tls-huawei)")
        return []
    if not isinstance(hw, dict):
        err(where, "edge.toml: huawei must be a table")
        return []
    url, url_file = hw.get("store_url"), hw.get("store_url_file")
    if (url is None) == (url_file is None):
        err(where, "edge.toml: [huawei] needs exactly one of store_url and store_url_file")
    if url is not None:
        if not str(url).startswith(("sqlite:", "postgres")):
            err(where, "edge.toml: huawei.store_url must start with sqlite: or postgres://")
        elif str(url).startswith("sqlite:"):
            err(where, "edge.toml: huawei.store_url is SQLite: every edge pod would have its own store "
                       "(and the root filesystem is read-only); use PostgreSQL")
        if URL_PASSWORD.match(str(url)):
            err(where, "edge.toml: huawei.store_url holds a password in a ConfigMap; "
                       "use store_url_file with Secret keymesh-store")
    if url_file is not None:
        parent = str(url_file).rpartition("/")[0]
        ref = volume_ref(mounts.get(parent, {}))
        if ref is not None and ref[0] != "Secret":
            err(where, f"edge.toml: huawei.store_url_file {url_file} comes from {ref[0]}/{ref[1]}, "
                       "not a Secret (it holds the database password)")
    ranges = {
        "deadline_ms": (100, 120_000, 5000),
        "max_body_bytes": (32 * 1024, None, 65536),
        "csms_max_body_bytes": (256 * 1024, None, 1 << 20),
        "max_skew_secs": (1, 3600, 900),
        "cache_ttl_ms": (0, 60_000, 1000),
        "purge_interval_ms": (100, None, 60_000),
    }
    for k, (lo, hi, default) in ranges.items():
        v = hw.get(k, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            err(where, f"edge.toml: huawei.{k} must be an integer {lo}..={hi if hi is not None else ''}")
    for k, v in (toml_section(cfg, "huawei.quotas") or {}).items():
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF_FFFF:
            err(where, f"edge.toml: huawei.quotas.{k} must be an integer 0..=4294967295")
    # The edge asks the workers to wrap new keys under domain_key_label; the
    # workers and Job huawei-domain-key-init use KEYMESH_DOMAIN_KEY_LABEL.
    label = hw.get("domain_key_label", DEFAULT_DOMAIN_KEY_LABEL)
    worker = by_kind.get("Deployment", {}).get("crypto-worker")
    wc = next((c for c in worker["spec"]["template"]["spec"]["containers"] if c["name"] == "crypto-worker"), None) if worker else None
    if wc is not None:
        env_cm = {}
        for e in wc.get("envFrom", []):
            env_cm.update(by_kind.get("ConfigMap", {}).get(e.get("configMapRef", {}).get("name", ""), {}).get("data", {}))
        env_cm.update({e["name"]: e.get("value") for e in wc.get("env", [])})
        worker_label = env_cm.get("KEYMESH_DOMAIN_KEY_LABEL", DEFAULT_DOMAIN_KEY_LABEL)
        if worker_label != label:
            err(where, f"edge.toml: huawei.domain_key_label {label!r} differs from the workers' "
                       f"KEYMESH_DOMAIN_KEY_LABEL {worker_label!r}: create-key would find no domain key")
        check_domain_key_job(where, wc, worker["spec"]["template"]["spec"], by_kind)
    return [url_file, hw.get("token_public_key_file")]


def check_domain_key_job(where: str, wc: dict, wspec: dict, by_kind: dict[str, dict[str, dict]]) -> None:
    """Some Job must create the domain key on the workers' token: same image,
    env sources, PIN file and volumes as the crypto-worker."""
    jobs = [
        (j, c)
        for j in by_kind.get("Job", {}).values()
        for c in j["spec"]["template"]["spec"]["containers"]
        if c.get("command", [])[:3] == ["keymeshctl", "domain-key", "init"]
    ]
    if not jobs:
        err(where, "[huawei] but no Job runs `keymeshctl domain-key init` (components/huawei): "
                   "create-key needs the HSM domain key")
    for j, c in jobs:
        jw = f"{where}: Job/{j['metadata']['name']}"
        if "--if-missing" not in c["command"]:
            err(jw, "domain-key init needs --if-missing (a Job may run more than once)")
        pin = lambda cont: next((e.get("value") for e in cont.get("env", []) if e["name"] == "KEYMESH_PIN_FILE"), None)
        jspec = j["spec"]["template"]["spec"]
        for what, mine, theirs in (
            ("image", c.get("image"), wc.get("image")),
            ("envFrom", c.get("envFrom", []), wc.get("envFrom", [])),
            ("KEYMESH_PIN_FILE", pin(c), pin(wc)),
            ("volumeMounts", c.get("volumeMounts", []), wc.get("volumeMounts", [])),
            ("volumes", jspec.get("volumes", []), wspec.get("volumes", [])),
        ):
            if mine != theirs:
                err(jw, f"{what} differs from Deployment/crypto-worker's: the domain key must be "
                        "created on the workers' HSM token")


def policy_selects(policy: dict, labels: dict) -> bool:
    sel = policy["spec"].get("podSelector", {})
    return not sel.get("matchExpressions") and all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())


def check_edge_egress(where: str, cfg: dict, by_kind: dict[str, dict[str, dict]]) -> None:
    """Once an Egress policy selects the edge, only listed egress is allowed:
    the edge must still reach DNS, the workers, the limiters and, with
    [huawei], PostgreSQL, and no rule may open everything."""
    edge = by_kind.get("Deployment", {}).get("edge")
    if not edge:
        return
    labels = edge["spec"]["template"]["metadata"].get("labels", {})
    rules = [
        (n["metadata"]["name"], r)
        for n in by_kind.get("NetworkPolicy", {}).values()
        if "Egress" in n["spec"].get("policyTypes", []) and policy_selects(n, labels)
        for r in n["spec"].get("egress", [])
    ]
    isolated = any(
        "Egress" in n["spec"].get("policyTypes", []) and policy_selects(n, labels)
        for n in by_kind.get("NetworkPolicy", {}).values()
    )
    if not isolated:
        return
    for name, r in rules:
        if not r.get("ports") or not r.get("to"):
            err(where, f"NetworkPolicy/{name}: an edge egress rule without ports or peers opens everything")

    def allows(port: int, proto: str = "TCP", target: str | None = None) -> bool:
        for _, r in rules:
            if not any(p.get("port") == port and p.get("protocol", "TCP") == proto for p in r.get("ports", [])):
                continue
            if target is None or any(
                peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": target}
                and "namespaceSelector" not in peer
                for peer in r.get("to", [])
            ):
                return True
        return False

    needs = [(53, "UDP", None, "DNS"), (53, "TCP", None, "DNS")]
    needs += [(7100, "TCP", "crypto-worker", "the workers"), (7200, "TCP", "rate-limiter", "the limiters")]
    if cfg.get("huawei") is not None:
        needs.append((POSTGRES_PORT, "TCP", None, "PostgreSQL ([huawei] store)"))
    for port, proto, target, what in needs:
        if not allows(port, proto, target):
            err(where, f"edge egress is restricted by a NetworkPolicy but nothing allows {what} "
                       f"({proto} {port}{' to ' + target + ' pods' if target else ''})")


def check_configs(overlay: str, by_kind: dict[str, dict[str, dict]]) -> None:
    cms, secrets = by_kind.get("ConfigMap", {}), by_kind.get("Secret", {})
    edge = by_kind.get("Deployment", {}).get("edge")
    if edge:
        spec = edge["spec"]["template"]["spec"]
        c = next(c for c in spec["containers"] if c["name"] == "edge")
        args = c.get("args", [])
        cfg_path = args[args.index("--config") + 1] if "--config" in args else None
        if not cfg_path:
            err(overlay, "edge container has no --config argument")
        else:
            mounts = mount_dirs(c, spec)
            vol = mounts.get(cfg_path.rpartition("/")[0], {})
            cm = cms.get(vol.get("configMap", {}).get("name", ""))
            if cm is None or cfg_path.rpartition("/")[2] not in cm.get("data", {}):
                err(overlay, f"edge --config {cfg_path} is not provided by a rendered ConfigMap")
            else:
                check_edge_toml(f"{overlay}: ConfigMap/{cm['metadata']['name']}", cm["data"][cfg_path.rpartition("/")[2]], c, spec, by_kind)
    for cm in cms.values():
        for key, text in cm.get("data", {}).items():
            where = f"{overlay}: ConfigMap/{cm['metadata']['name']}/{key}"
            if key == "limiter.toml":
                try:
                    q = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    err(where, f"not TOML: {e}")
                    continue
                buckets = [q.get("default", {})] + q.get("tenants", [])
                for t in q.get("tenants", []):
                    buckets += list(t.get("operations", {}).values())
                    if "tenant" not in t:
                        err(where, "a [[tenants]] entry has no tenant")
                for b in buckets:
                    if b and not (b.get("rate_per_second", 0) > 0 and b.get("burst", 0) > 0):
                        err(where, f"bucket {b} needs rate_per_second and burst > 0")
            elif key.endswith(".toml") and key != "edge.toml":
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    err(where, f"not TOML: {e}")
    for s in secrets.values():
        for key, text in s.get("stringData", {}).items():
            if key.endswith(".json"):
                try:
                    ks = json.loads(text)
                    if not isinstance(ks.get("keystores"), list):
                        err(f"{overlay}: Secret/{s['metadata']['name']}/{key}", 'needs a "keystores" list')
                except json.JSONDecodeError as e:
                    err(f"{overlay}: Secret/{s['metadata']['name']}/{key}", f"not JSON: {e}")


# --------------------------------------------------------------------------- 4


def recorded_metrics() -> set[str]:
    """Metric series names the services export, from their metrics! macros."""
    names: set[str] = set()
    for root in ("services", "crates"):
        for f in (REPO / root).rglob("*.rs"):
            text = f.read_text()
            for kind, name in re.findall(r'\b(counter|histogram|gauge)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', text):
                names.add(name)
                if kind == "histogram":
                    # Rendered with buckets (keymesh_common::prometheus) or, without
                    # them, as a summary: allow both shapes' series.
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}


def metrics_in(expr: str) -> set[str]:
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?[A-Za-z_]+\}?", "", e)  # Grafana variables
    out = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", m.group(1)):
            continue
        out.add(m.group(1))
    return out


def check_metrics(where: str, expr: str, known: set[str]) -> None:
    used = metrics_in(expr)
    if not used:
        err(where, f"expression uses no metric: {expr}")
    for name in sorted(used - known - EXTERNAL_METRICS):
        err(where, f"unknown metric {name!r} (not recorded by services/ or crates/)")


def check_observability() -> None:
    known = recorded_metrics()
    obs = DEPLOY / "observability"
    dashboards = sorted(obs.glob("*.json"))
    if not dashboards:
        err("deploy/observability", "no Grafana dashboard JSON")
    for path in dashboards:
        where = str(path.relative_to(REPO))
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            err(where, f"not JSON: {e}")
            continue
        for k in ("title", "uid", "panels", "schemaVersion"):
            if k not in dash:
                err(where, f"dashboard has no {k!r}")
        panels = []
        for p in dash.get("panels", []):
            panels.append(p)
            panels.extend(p.get("panels", []))
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)):
            err(where, "panel ids are not unique")
        for p in panels:
            if p.get("type") == "row":
                continue
            targets = p.get("targets", [])
            if not targets:
                err(where, f"panel {p.get('title')!r} has no targets")
            for t in targets:
                check_metrics(f"{where}: panel {p.get('title')!r}", t.get("expr", ""), known)
    rule_files = sorted(obs.glob("*.rules.yaml")) + sorted(obs.glob("*.rules.yml"))
    if not rule_files:
        err("deploy/observability", "no Prometheus rules file (*.rules.yaml)")
    for path in rule_files:
        where = str(path.relative_to(REPO))
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            err(where, f"not YAML: {e}")
            continue
        if not isinstance(doc, dict) or set(doc) != {"groups"} or not isinstance(doc["groups"], list):
            err(where, "a rules file is {groups: [...]} and nothing else")
            continue
        seen = set()
        for g in doc["groups"]:
            if not isinstance(g, dict) or not g.get("name") or not isinstance(g.get("rules"), list):
                err(where, "every group needs a name and a rules list")
                continue
            if g["name"] in seen:
                err(where, f"duplicate group {g['name']}")
            seen.add(g["name"])
            extra = set(g) - {"name", "interval", "rules", "limit", "query_offset", "labels"}
            if extra:
                err(where, f"group {g['name']}: unknown keys {sorted(extra)}")
            for r in g["rules"]:
                rw = f"{where}: {g['name']}/{r.get('alert') or r.get('record')}"
                if ("alert" in r) == ("record" in r):
                    err(rw, "a rule has exactly one of alert/record")
                extra = set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
                if extra:
                    err(rw, f"unknown keys {sorted(extra)}")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    err(rw, "expr missing")
                    continue
                if r["expr"].count("(") != r["expr"].count(")"):
                    err(rw, "unbalanced parentheses in expr")
                if "for" in r and not re.fullmatch(r"(\d+[smhdwy])+", str(r["for"])):
                    err(rw, f"for: {r['for']!r} is not a duration")
                if "alert" in r:
                    if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                        err(rw, "labels.severity must be critical, warning or info")
                    for a in ("summary", "description", "runbook"):
                        if not r.get("annotations", {}).get(a):
                            err(rw, f"annotations.{a} missing")
                check_metrics(rw, r["expr"], known)


# ---------------------------------------------------------------------------


PACKAGES = {"edge": "keymesh-edge", "crypto-worker": "keymesh-crypto-worker", "rate-limiter": "keymesh-rate-limiter"}


def check_dockerfiles() -> None:
    """No Docker engine here: check the multi-stage shape by reading them."""
    for svc, pkg in PACKAGES.items():
        path = REPO / "services" / svc / "Dockerfile"
        where = str(path.relative_to(REPO))
        if not path.exists():
            err(where, "missing")
            continue
        text = path.read_text()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        if len(froms) < 2 or not froms[0].startswith("rust:1.95-bookworm") or froms[-1] != "debian:bookworm-slim":
            err(where, "expected a rust:1.95-bookworm build stage and a debian:bookworm-slim runtime")
        if not re.search(rf"cargo build --release --locked\b.*-p {re.escape(pkg)}\b", text):
            err(where, f"expected cargo build --release --locked -p {pkg}")
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        if not users or users[-1].split(":")[0] in ("root", "0"):
            err(where, "the runtime stage must switch to a non-root USER")
        if svc == "crypto-worker" and "softhsm2" not in text:
            err(where, "the worker runtime installs softhsm2")


def main() -> int:
    rendered = Path(sys.argv[1])
    overlays = sorted(rendered.glob("*.yaml"))
    if not overlays:
        err(str(rendered), "no rendered overlays")
    total = 0
    for path in overlays:
        overlay = path.stem
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as e:
            err(overlay, f"rendered output is not YAML: {e}")
            continue
        total += len(docs)
        validate_schemas(overlay, docs)
        check_workloads(overlay, docs)
    check_observability()
    check_dockerfiles()
    if errors:
        for e in errors:
            print(f"  FAIL {e}")
        print(f"validate-deploy: {len(errors)} problem(s)")
        return 1
    print(f"validate-deploy: {len(overlays)} renders, {total} objects valid against Kubernetes "
          f"{', '.join(K8S_VERSIONS)} (strict); edge/limiter/policy configs, dashboard, alert rules and Dockerfiles OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

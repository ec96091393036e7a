"""Validate Kubernetes manifests offline; run by validate.sh in its virtualenv.

    validate.py --kube-version=1.30.0 [--kube-version=...] [--quiet] FILE...

Every document of every FILE is checked against the Kubernetes API schema of
each version (kubernetes-validate's strict schemas: no unknown fields), and a
kind or apiVersion that has no schema is an error, not a warning. A duplicate
key in a mapping is an error (PyYAML would keep the last one silently).

Then what the shipped forms promise, for every workload with a container
named `rolegate`:
- it runs as uid/gid 65532, non-root, read-only root filesystem, no
  privilege escalation, all capabilities dropped, with memory requests and
  limits and liveness and readiness probes on the ops port;
- in a file whose name contains `native-sidecar`, rolegate is an init
  container with `restartPolicy: Always` and a startupProbe (so the app
  containers start only once it is ready), and not a regular container;
  elsewhere it is a regular container;
- the termination grace period is longer than rolegate's preStop pause plus
  its drain (ROLEGATE_DRAIN_SECONDS, default 20);
- a Service in the same file targets rolegate's data port, never another
  container's;
- a PodDisruptionBudget in the same file selects the workload's pods.
Exit status 0 when all is well, 1 otherwise.
"""

import argparse
import os
import sys

import yaml
from kubernetes_validate import utils

ROLEGATE_UID = 65532
DEFAULT_DRAIN_SECONDS = 20


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key `{key}`", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def schema_problems(doc, versions):
    problems = []
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return ["not a Kubernetes object (no kind or apiVersion)"]
    for version in versions:
        try:
            utils.validate(doc, version, strict=True)
        except utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"Kubernetes {e.version}: {path or '(top)'}: {e.message}")
        except utils.SchemaNotFoundError:
            problems.append(
                f"Kubernetes {version}: no schema for kind `{doc['kind']}` "
                f"in apiVersion `{doc['apiVersion']}`"
            )
    return problems


def pod_spec(doc):
    spec = doc.get("spec") or {}
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec") or {}
    if doc.get("kind") == "Pod":
        return spec
    return None


def env_value(container, name, default):
    for e in container.get("env") or []:
        if e.get("name") == name and "value" in e:
            return e["value"]
    return default


def prestop_seconds(container):
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and cmd[0] == "sleep":
        return int(cmd[1])
    return 0


def rolegate_problems(doc, native):
    """What every form promises about the rolegate container of one workload."""
    spec = pod_spec(doc)
    containers = {c["name"]: c for c in spec.get("containers") or []}
    inits = {c["name"]: c for c in spec.get("initContainers") or []}
    problems = []
    if native:
        if "rolegate" in containers:
            problems.append("rolegate is a regular container in the native-sidecar form")
        c = inits.get("rolegate")
        if c is None:
            return problems + ["no rolegate init container in the native-sidecar form"]
        if c.get("restartPolicy") != "Always":
            problems.append("the rolegate init container lacks `restartPolicy: Always`")
        probe = c.get("startupProbe") or {}
        if (probe.get("httpGet") or {}).get("path") != "/ready":
            problems.append("the rolegate init container has no startupProbe on /ready")
        later = [i["name"] for i in spec.get("initContainers") or []]
        if later and later[0] != "rolegate":
            problems.append(f"init containers before rolegate: {later[: later.index('rolegate')]}")
    else:
        c = containers.get("rolegate")
        if c is None:
            return problems + ["no rolegate container"]
    sc = c.get("securityContext") or {}
    pod_sc = spec.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if uid != ROLEGATE_UID or gid != ROLEGATE_UID:
        problems.append(f"rolegate runs as {uid}:{gid}, not {ROLEGATE_UID}:{ROLEGATE_UID}")
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        problems.append("rolegate lacks runAsNonRoot")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("rolegate's root filesystem is not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("rolegate allows privilege escalation")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("rolegate does not drop all capabilities")
    res = c.get("resources") or {}
    if "memory" not in (res.get("requests") or {}) or "memory" not in (res.get("limits") or {}):
        problems.append("rolegate has no memory request and limit")
    ops_port = int(str(env_value(c, "ROLEGATE_OPS_LISTEN", "0.0.0.0:9090")).rsplit(":", 1)[1])
    for kind in ("livenessProbe", "readinessProbe"):
        port = ((c.get(kind) or {}).get("httpGet") or {}).get("port")
        if port not in (ops_port, "ops"):
            problems.append(f"rolegate's {kind} is not on the ops port {ops_port}")
    drain = int(env_value(c, "ROLEGATE_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    if grace <= prestop_seconds(c) + drain:
        problems.append(
            f"terminationGracePeriodSeconds {grace} does not cover rolegate's preStop "
            f"{prestop_seconds(c)} s plus its drain {drain} s"
        )
    return problems


def service_problems(service, workload):
    spec = pod_spec(workload)
    rolegate = next(
        c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
        if c["name"] == "rolegate"
    )
    mine = {p.get("name") for p in rolegate.get("ports") or []} | {
        p.get("containerPort") for p in rolegate.get("ports") or []
    }
    listen = env_value(rolegate, "ROLEGATE_LISTEN", "0.0.0.0:8080")
    data_port = int(str(listen).rsplit(":", 1)[1])
    problems = []
    for p in (service.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        if target not in mine:
            problems.append(f"{name_of(service)} port {p.get('port')} targets `{target}`, not a rolegate port")
            continue
        number = next(
            (q["containerPort"] for q in rolegate.get("ports") or [] if target in (q.get("name"), q["containerPort"])),
            None,
        )
        if number != data_port:
            problems.append(f"{name_of(service)} port {p.get('port')} targets {target} ({number}), not the data port {data_port}")
    return problems


def selects(selector, labels):
    want = (selector or {}).get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


def problems_of(docs, label, versions):
    """Everything wrong with the documents of one file (empty: all is well)."""
    if not docs:
        return ["no documents"]
    problems = []
    for doc in docs:
        problems += [f"{name_of(doc)}: {p}" for p in schema_problems(doc, versions)]
    docs = [d for d in docs if isinstance(d, dict)]
    workloads = [
        d for d in docs
        if pod_spec(d) is not None
        and any(c.get("name") == "rolegate"
                for c in (pod_spec(d).get("containers") or []) + (pod_spec(d).get("initContainers") or []))
    ]
    native = "native-sidecar" in label
    if native and not workloads:
        problems.append("no workload with rolegate in a native-sidecar file")
    for w in workloads:
        mine = rolegate_problems(w, native)
        problems += [f"{name_of(w)}: {p}" for p in mine]
        if mine:
            continue
        labels = (((w.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
        if not any(selects((d.get("spec") or {}).get("selector"), labels) for d in pdbs):
            problems.append(f"{name_of(w)}: no PodDisruptionBudget selects its pods")
        for s in docs:
            if s.get("kind") == "Service" and selects({"matchLabels": (s.get("spec") or {}).get("selector")}, labels):
                problems += service_problems(s, w)
    return problems


def self_test(classic_path, native_path, versions):
    """Break the real rendered manifests one way at a time; each must fail, for its reason."""
    import copy

    classic, native = load(classic_path), load(native_path)

    def first(docs, kind):
        return next(d for d in docs if d.get("kind") == kind)

    def rolegate(docs):
        spec = pod_spec(first(docs, "Deployment"))
        return next(c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                    if c["name"] == "rolegate")

    def set_(f):
        def mutate(docs):
            f(docs)
            return docs
        return mutate

    cases = [
        ("classic", "unknown field (typo)", "was unexpected",
         set_(lambda d: rolegate(d).update(imagePullPolice="IfNotPresent"))),
        ("classic", "wrong type", "is not of type 'integer'",
         set_(lambda d: rolegate(d)["ports"][0].update(containerPort="8080"))),
        ("classic", "missing required field", "'selector' is a required property",
         set_(lambda d: first(d, "Deployment")["spec"].pop("selector"))),
        ("classic", "unknown apiVersion", "no schema for kind",
         set_(lambda d: first(d, "Deployment").update(apiVersion="apps/v2"))),
        ("classic", "unknown kind", "no schema for kind",
         set_(lambda d: first(d, "Service").update(kind="Servcie"))),
        ("classic", "writable root filesystem", "not read-only",
         set_(lambda d: rolegate(d)["securityContext"].update(readOnlyRootFilesystem=False))),
        ("classic", "runs as root", "runs as 0",
         set_(lambda d: rolegate(d)["securityContext"].update(runAsUser=0))),
        ("classic", "grace period shorter than preStop plus drain", "does not cover",
         set_(lambda d: pod_spec(first(d, "Deployment")).update(terminationGracePeriodSeconds=20))),
        ("classic", "no memory limit", "no memory request and limit",
         set_(lambda d: rolegate(d)["resources"].pop("limits"))),
        ("classic", "Service targets the app", "not a rolegate port",
         set_(lambda d: first(d, "Service")["spec"]["ports"][0].update(targetPort=8081))),
        ("classic", "no PodDisruptionBudget", "no PodDisruptionBudget selects",
         lambda d: [x for x in d if x.get("kind") != "PodDisruptionBudget"]),
        ("native-sidecar", "no startupProbe", "no startupProbe on /ready",
         set_(lambda d: rolegate(d).pop("startupProbe"))),
        ("native-sidecar", "not restartable", "lacks `restartPolicy: Always`",
         set_(lambda d: rolegate(d).pop("restartPolicy"))),
        ("native-sidecar", "a regular container", "no rolegate init container",
         lambda d: classic_copy()),
    ]

    def classic_copy():
        return copy.deepcopy(classic)

    failures = 0
    for form, docs in (("classic", classic), ("native-sidecar", native)):
        p = problems_of(copy.deepcopy(docs), form, versions)
        if p:
            print(f"FAIL self-test: the unbroken {form} manifests do not pass: {p}")
            failures += 1
    duplicate = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n"
    try:
        list(yaml.load_all(duplicate, Loader=UniqueKeyLoader))
        print("FAIL self-test: a duplicate key was accepted")
        failures += 1
    except yaml.YAMLError:
        pass
    for form, what, phrase, mutate in cases:
        docs = mutate(copy.deepcopy(classic if form == "classic" else native))
        p = problems_of(docs, form, versions)
        if not any(phrase in x for x in p):
            print(f"FAIL self-test: {form} with {what}: expected a problem with `{phrase}`, got {p}")
            failures += 1
    if not failures:
        print(f"ok   self-test: {len(cases) + 1} broken variants of the rendered manifests rejected, each for its reason")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--self-test", nargs=2, metavar=("CLASSIC", "NATIVE"),
                    help="break these rendered manifests in known ways and expect each to fail")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.self_test:
        return self_test(*args.self_test, args.kube_version)

    failures = 0
    for path in args.files:
        label = os.path.basename(path)
        docs = []
        try:
            docs = load(path)
            problems = problems_of(docs, label, args.kube_version)
        except (OSError, yaml.YAMLError) as e:
            problems = [str(e)]
        if problems:
            failures += 1
            print(f"FAIL {label}")
            for p in problems:
                print(f"     {p}")
        elif not args.quiet:
            kinds = ", ".join(name_of(d) for d in docs)
            print(f"ok   {label}: {kinds} (Kubernetes {', '.join(args.kube_version)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

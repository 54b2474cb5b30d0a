"""Checks deploy/kubernetes without a cluster; run by scripts/validate-k8s.sh,
which installs what this needs.

    validate_k8s.py --k8s-dir DIR --kubectl BIN --camstream BIN
                    --promtool BIN --pipelines DIR

Checks, each one line of the report:

- build: every kustomization of the tree builds (`kubectl kustomize`, which
  is kustomize): its resources, patches and generated ConfigMaps resolve.
- schema: every resource of every build against the Kubernetes OpenAPI
  schemas (kubernetes-validate, strict: unknown fields fail) for the oldest
  and newest versions supported; an unknown kind fails too.
- wiring: what the schemas cannot see: selectors match their pods, named
  ports and volumes exist, the init container renders a template its
  ConfigMap has, the port agrees wherever it is written, and the security
  settings the README promises hold in every container.
- files: every file under the tree is used by a kustomization (or is a
  README, or the Prometheus job), so none escapes these checks.
- config: every camstream.toml (and <node>.toml) of every ConfigMap,
  rendered by the shipped render-config.sh with stand-in secrets, passes
  `camstream check`, and no stand-in secret appears in its output.
- prometheus: the scrape job passes `promtool check config`.
- self-test: a broken manifest fails the schema and wiring checks, and
  render-config.sh refuses a missing key and an unsafe value, so a check
  that silently passed everything would be caught.
"""

import argparse
import copy
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate.utils as kv
import yaml

# The Kubernetes versions the manifests are checked against: the oldest
# we claim (README.md) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]

WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet"}
RENDER_SCRIPT = "render-config.sh"
# Where the pods mount their Secret (and where camstream.toml points for
# files such as token_file): rewritten to the stand-in secrets directory
# for `camstream check`.
SECRETS_MOUNT = "/run/secrets/camstream"
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok: {what}")

    def fail(self, what, problems):
        self.failed += 1
        print(f"FAILED: {what}")
        for problem in problems:
            print(f"    {problem}")

    def skip(self, what, why):
        self.skipped += 1
        print(f"SKIPPED: {what}: {why}")

    def check(self, what, problems):
        if problems:
            self.fail(what, problems)
        else:
            self.ok(what)


def name_of(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- schema ------------------------------------------------------------------


def schema_problems(docs, version):
    problems = []
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            problems.append(f"{name_of(doc)}: {where}: {e.message}")
        except kv.SchemaNotFoundError as e:
            problems.append(f"{name_of(doc)}: {e.message}")
    return problems


# --- wiring ------------------------------------------------------------------


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def port_number(container, ref):
    """The containerPort that `ref` (a number or a port name) means."""
    for port in container.get("ports", []):
        if ref in (port["containerPort"], port.get("name")):
            return port["containerPort"]
    return None


def env_value(container, name):
    for env in container.get("env", []):
        if env["name"] == name:
            return env.get("value")
    return None


def workload_problems(doc, configmaps):
    """The pod template of one workload."""
    name = name_of(doc)
    problems = []
    template = doc["spec"]["template"]
    labels = template["metadata"].get("labels", {})
    if not matches(doc["spec"]["selector"].get("matchLabels", {}), labels):
        problems.append(f"{name}: spec.selector does not match the pod template's labels")
    spec = template["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    security = spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: securityContext.runAsNonRoot is not true")
    # The image's USER is a name, which runAsNonRoot cannot check: without
    # a numeric uid the kubelet refuses to start the container.
    if not isinstance(security.get("runAsUser"), int) or security["runAsUser"] == 0:
        problems.append(f"{name}: securityContext.runAsUser is not a non-root uid")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: securityContext.seccompProfile is not RuntimeDefault")
    for volume in volumes.values():
        if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
            problems.append(
                f"{name}: volume {volume['name']} names ConfigMap "
                f"{volume['configMap']['name']}, which the kustomization does not make"
            )
    for c in containers(spec):
        cname = f"{name} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem is not true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{cname}: capabilities.drop is not [ALL]")
        if sc.get("privileged"):
            problems.append(f"{cname}: privileged")
        if "cpu" not in c.get("resources", {}).get("requests", {}):
            problems.append(f"{cname}: no CPU request")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            problems.append(f"{cname}: no memory limit")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{cname}: mounts volume {mount['name']}, which the pod does not have")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = c.get(probe, {}).get("httpGet")
            if http and port_number(c, http["port"]) is None:
                problems.append(f"{cname}: {probe} port {http['port']} is not a container port")
    main = spec["containers"][0]
    http_port = port_number(main, "http")
    listen = env_value(main, "CAMSTREAM_LISTEN")
    if http_port is None:
        problems.append(f"{name}: container {main['name']} has no port named http")
    elif listen is None or not listen.endswith(f":{http_port}"):
        problems.append(f"{name}: CAMSTREAM_LISTEN {listen!r} is not on the http port {http_port}")
    scrape_port = template["metadata"].get("annotations", {}).get("prometheus.io/port")
    if scrape_port is not None and scrape_port != str(http_port):
        problems.append(f"{name}: prometheus.io/port {scrape_port} is not the http port {http_port}")
    problems += render_wiring_problems(doc, configmaps)
    return problems


def render_plan(doc, configmaps):
    """What the workload's render-config init container does: (ConfigMap,
    template keys in order, secrets dir, output path), or None."""
    spec = pod_spec(doc)
    init = next((c for c in spec.get("initContainers", []) if c["name"] == "render-config"), None)
    if init is None:
        return None
    mounts = {m["mountPath"]: m["name"] for m in init.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    script = init["command"][-1]
    secrets, output, *templates = init["args"]

    def configmap_key(path):
        directory, _, key = path.rpartition("/")
        volume = volumes.get(mounts.get(directory))
        if volume is None or "configMap" not in volume:
            return None, key
        return configmaps.get(volume["configMap"]["name"]), key

    cm, script_key = configmap_key(script)
    keys = [configmap_key(t)[1] for t in templates]
    return {
        "init": init,
        "configmap": cm,
        "script_key": script_key,
        "template_keys": keys,
        "templates": templates,
        "secrets": secrets,
        "output": output,
        "mounts": mounts,
    }


def render_wiring_problems(doc, configmaps):
    plan = render_plan(doc, configmaps)
    name = name_of(doc)
    if plan is None:
        return [f"{name}: no render-config init container"]
    problems = []
    cm = plan["configmap"]
    if cm is None:
        return [f"{name}: render-config's script is not in a mounted ConfigMap"]
    data = cm.get("data", {})
    if plan["script_key"] not in data:
        problems.append(f"{name}: ConfigMap {cm['metadata']['name']} has no {plan['script_key']}")
    # The last template is the fallback every pod has; earlier ones (the
    # node's own file) may be absent.
    if plan["template_keys"][-1] not in data:
        problems.append(
            f"{name}: ConfigMap {cm['metadata']['name']} has no {plan['template_keys'][-1]}, "
            "the template every pod falls back to"
        )
    main = pod_spec(doc)["containers"][0]
    if env_value(main, "CAMSTREAM_CONFIG") != plan["output"]:
        problems.append(f"{name}: CAMSTREAM_CONFIG is not {plan['output']}, the file render-config writes")
    out_dir = plan["output"].rpartition("/")[0]
    main_mounts = {m["mountPath"]: m for m in main.get("volumeMounts", [])}
    if plan["mounts"].get(out_dir) is None or main_mounts.get(out_dir, {}).get("name") != plan["mounts"][out_dir]:
        problems.append(f"{name}: the init container and camstream do not share {out_dir}")
    if plan["secrets"] != SECRETS_MOUNT or SECRETS_MOUNT not in plan["mounts"]:
        problems.append(f"{name}: render-config does not read the Secret mounted at {SECRETS_MOUNT}")
    return problems


def wiring_problems(docs):
    try:
        return wiring_problems_of(docs)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        # A manifest too broken to follow; the schema check says where.
        return [f"cannot follow the manifests ({type(e).__name__}: {e})"]


def wiring_problems_of(docs):
    problems = []
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    for doc in workloads:
        problems += workload_problems(doc, configmaps)

    def pods_selected_by(selector):
        return [w for w in workloads if matches(selector, w["spec"]["template"]["metadata"].get("labels", {}))]

    for doc in docs:
        if doc["kind"] == "Service":
            selected = pods_selected_by(doc["spec"].get("selector", {}))
            if len(selected) != 1:
                problems.append(f"{name_of(doc)}: selects {len(selected)} workloads, not one")
                continue
            main = pod_spec(selected[0])["containers"][0]
            for port in doc["spec"]["ports"]:
                if port_number(main, port.get("targetPort", port["port"])) is None:
                    problems.append(f"{name_of(doc)}: targetPort {port.get('targetPort')} is not a port of its pods")
        elif doc["kind"] == "PodDisruptionBudget":
            if not pods_selected_by(doc["spec"]["selector"].get("matchLabels", {})):
                problems.append(f"{name_of(doc)}: selects no workload")
        elif doc["kind"] == "HorizontalPodAutoscaler":
            ref = doc["spec"]["scaleTargetRef"]
            target = [w for w in workloads if w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"]]
            if not target:
                problems.append(f"{name_of(doc)}: scales {ref['kind']}/{ref['name']}, which is not here")
            elif "replicas" in target[0]["spec"]:
                problems.append(
                    f"{name_of(doc)}: {ref['kind']}/{ref['name']} sets replicas, which every apply would reset"
                )
    return problems


# --- files ------------------------------------------------------------------


def files_problems(k8s_dir):
    """Every file under the tree is used by some kustomization."""
    used = set()
    for kustomization in k8s_dir.rglob("kustomization.yaml"):
        base = kustomization.parent
        used.add(kustomization.resolve())
        k = yaml.safe_load(kustomization.read_text())
        paths = list(k.get("resources", []))
        paths += [p["path"] for p in k.get("patches", []) if "path" in p]
        for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            paths += [f.split("=", 1)[-1] for f in generator.get("files", [])]
        for p in paths:
            target = (base / p).resolve()
            if target.is_file():
                used.add(target)
    problems = []
    for f in sorted(k8s_dir.rglob("*")):
        if not f.is_file() or f.name == "README.md" or f.parent.name == "prometheus":
            continue
        if f.resolve() not in used:
            problems.append(f"{f}: no kustomization uses it, so nothing checks it")
    return problems


# --- config -----------------------------------------------------------------


def stand_in(name):
    """A stand-in secret: distinct per key (camstream may refuse equal
    tokens), 32 hex digits (a token needs 16 characters or more)."""
    return hashlib.sha256(f"validate-k8s {name}".encode()).hexdigest()[:32]


def render(script, secrets_dir, output, templates):
    return subprocess.run(
        ["sh", str(script), str(secrets_dir), str(output), *map(str, templates)],
        capture_output=True,
        text=True,
    )


def config_checks(report, builds, args):
    seen = set()
    for docs in builds:
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            if doc["kind"] not in WORKLOAD_KINDS:
                continue
            try:
                plan = render_plan(doc, configmaps)
            except (KeyError, IndexError, TypeError, ValueError):
                plan = None  # the wiring check has said why
            if plan is None or plan["configmap"] is None:
                continue
            cm = plan["configmap"]
            for key, text in sorted(cm["data"].items()):
                if not key.endswith(".toml") or (key, text) in seen:
                    continue
                seen.add((key, text))
                config_check(report, f"{cm['metadata']['name']}/{key}", cm, key, plan, args)


def check_env(pipelines):
    """The environment of `camstream check`: the image's templates
    directory (the repository's pipelines/), and none of the caller's
    CAMSTREAM_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMSTREAM_")}
    env.update(CAMSTREAM_PIPELINES_DIR=str(pipelines), NO_COLOR="1")
    return env


def config_check(report, what, cm, key, plan, args):
    with tempfile.TemporaryDirectory(prefix="validate-k8s-") as tmp:
        tmp = Path(tmp)
        mounted = tmp / "template"
        mounted.mkdir()
        for k, v in cm["data"].items():
            (mounted / k).write_text(v)
        secrets = tmp / "secrets"
        secrets.mkdir()
        text = cm["data"][key]
        names = set(PLACEHOLDER.findall(text))
        names |= set(re.findall(re.escape(SECRETS_MOUNT) + r"/([A-Za-z0-9_.\-]+)", text))
        for name in names:
            (secrets / name).write_text(stand_in(name) + "\n")
        rendered = tmp / "camstream.toml"
        result = render(mounted / plan["script_key"], secrets, rendered, [mounted / key])
        if result.returncode != 0:
            report.fail(f"config {what}: render-config.sh", result.stderr.splitlines())
            return
        config = rendered.read_text().replace(SECRETS_MOUNT, str(secrets))
        if "${" in re.sub(r"(?m)^\s*#.*$", "", config):
            report.fail(f"config {what}", ["a ${...} is left after rendering"])
            return
        rendered.write_text(config)
        result = subprocess.run(
            [args.camstream, "check", "--config", str(rendered)],
            capture_output=True,
            text=True,
            env=check_env(args.pipelines),
        )
        out = (result.stdout + result.stderr).replace(str(rendered), f"{what} (rendered)")
        problems = [] if result.returncode == 0 else out.splitlines()
        leaked = [n for n in names if stand_in(n) in out]
        if leaked:
            problems.append(f"camstream check printed the value of {', '.join(sorted(leaked))}")
        report.check(f"config {what}: camstream check", problems)
        if not problems:
            for line in out.splitlines():
                print(f"    {line}")


# --- prometheus ---------------------------------------------------------------


def prometheus_check(report, k8s_dir, promtool):
    """Debian's promtool is built without Kubernetes service discovery, so
    each job's kubernetes_sd_configs becomes a static target and its
    credentials_file a stand-in file; the rest is checked as written."""
    source = k8s_dir / "prometheus" / "scrape-config.yml"
    config = yaml.safe_load(source.read_text())
    with tempfile.TemporaryDirectory(prefix="validate-k8s-") as tmp:
        token = Path(tmp) / "token"
        token.write_text(stand_in("METRICS_TOKEN"))
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
            if "authorization" in job:
                job["authorization"]["credentials_file"] = str(token)
        checked = Path(tmp) / "prometheus.yml"
        checked.write_text(yaml.safe_dump(config))
        result = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True)
        report.check(
            f"prometheus {source}: promtool check config",
            [] if result.returncode == 0 else (result.stdout + result.stderr).splitlines(),
        )


# --- self-test ---------------------------------------------------------------


def self_test(report, base_docs, k8s_dir):
    """The checks above must fail on broken input."""
    problems = []

    def first(docs, kind):
        return next(d for d in docs if d["kind"] == kind)

    breakages = {
        "an unknown field": lambda d: first(d, "Deployment")["spec"]["template"]["spec"]["containers"][0].update(
            imagePullPolcy="Always"
        ),
        "a string for a number": lambda d: first(d, "HorizontalPodAutoscaler")["spec"].update(minReplicas="two"),
        "an unknown kind": lambda d: first(d, "DaemonSet").update(kind="DaemonSett"),
        "a missing required field": lambda d: first(d, "DaemonSet")["spec"].pop("selector"),
    }
    for what, breakage in breakages.items():
        docs = copy.deepcopy(base_docs)
        breakage(docs)
        if not schema_problems(docs, KUBERNETES_VERSIONS[-1]):
            problems.append(f"the schema check passed a manifest with {what}")
    wiring = {
        "a probe on a port that does not exist": lambda d: first(d, "DaemonSet")["spec"]["template"]["spec"][
            "containers"
        ][0]["livenessProbe"]["httpGet"].update(port="metrics"),
        "a Service selecting no pod": lambda d: first(d, "Service")["spec"]["selector"].update(
            {"app.kubernetes.io/component": "nothing"}
        ),
        "a writable root file system": lambda d: first(d, "Deployment")["spec"]["template"]["spec"][
            "initContainers"
        ][0]["securityContext"].update(readOnlyRootFilesystem=False),
    }
    for what, breakage in wiring.items():
        docs = copy.deepcopy(base_docs)
        breakage(docs)
        if not wiring_problems(docs):
            problems.append(f"the wiring check passed a manifest with {what}")

    script = k8s_dir / "base" / RENDER_SCRIPT
    with tempfile.TemporaryDirectory(prefix="validate-k8s-") as tmp:
        tmp = Path(tmp)
        secrets = tmp / "secrets"
        secrets.mkdir()
        secret_value = "s3cret-value"
        (secrets / "GOOD").write_text(secret_value + "\n")
        (secrets / "QUOTE").write_text('pa"ss')
        (secrets / "BACKSLASH").write_text("pa\\ss")
        (secrets / "NEWLINE").write_text("pa\nss")
        (secrets / "tls.key").write_text("not a placeholder")
        cases = {
            "a key the Secret does not have": ('a = "${MISSING}"\n', "MISSING"),
            "a double quote in a value": ('a = "${QUOTE}"\n', "QUOTE"),
            "a backslash in a value": ('a = "${BACKSLASH}"\n', "BACKSLASH"),
            "a newline in a value": ('a = "${NEWLINE}"\n', "NEWLINE"),
            "a placeholder that is not a NAME": ('a = "${tls.key}"\n', "tls.key"),
        }
        for what, (text, named) in cases.items():
            template = tmp / "camstream.toml"
            template.write_text(text)
            output = tmp / "out.toml"
            output.unlink(missing_ok=True)
            result = render(script, secrets, output, [template])
            if result.returncode == 0 or output.exists() or named not in result.stderr:
                problems.append(f"render-config.sh did not refuse {what} naming {named}: {result.stderr.strip()!r}")
        # And it renders: the node's own file first, comments untouched,
        # the trailing newline of a Secret file dropped.
        (tmp / "node-a.toml").write_text('# ${GOOD}\na = "x${GOOD}y"\n')
        (tmp / "camstream.toml").write_text('a = "fallback"\n')
        output = tmp / "out.toml"
        result = render(script, secrets, output, [tmp / "node-a.toml", tmp / "camstream.toml"])
        expected = f'# ${{GOOD}}\na = "x{secret_value}y"\n'
        if result.returncode != 0 or output.read_text() != expected:
            problems.append(f"render-config.sh rendered {output.read_text()!r}, not {expected!r}")
        if secret_value in result.stdout + result.stderr:
            problems.append("render-config.sh printed a secret")
        result = render(script, secrets, output, [tmp / "node-b.toml", tmp / "camstream.toml"])
        if result.returncode != 0 or output.read_text() != 'a = "fallback"\n':
            problems.append("render-config.sh did not fall back to camstream.toml")
        for what, (secrets_dir, templates, message) in {
            "no template": (secrets, [tmp / "node-b.toml"], "the ConfigMap needs a camstream.toml"),
            "no secrets directory": (tmp / "nothing", [tmp / "camstream.toml"], "mount the pod's Secret there"),
        }.items():
            result = render(script, secrets_dir, tmp / "other.toml", templates)
            if result.returncode == 0 or message not in result.stderr:
                problems.append(f"render-config.sh did not refuse {what}: {result.stderr.strip()!r}")
    report.check("self-test: broken manifests and unsafe secrets are refused", problems)


def build(kubectl, directory):
    """`kubectl kustomize DIR`: the resources, or the error."""
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.splitlines()
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc], []


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k8s-dir", type=Path, required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--camstream", required=True)
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--pipelines", type=Path, required=True)
    args = parser.parse_args()

    report = Report()
    builds = {}
    for kustomization in sorted(args.k8s_dir.rglob("kustomization.yaml")):
        directory = kustomization.parent
        docs, problems = build(args.kubectl, directory)
        report.check(f"build {directory}", problems)
        if docs is None:
            continue
        builds[directory] = docs
        what = f"{directory} ({len(docs)} resources)"
        for version in KUBERNETES_VERSIONS:
            report.check(f"schema {what}, Kubernetes {version}", schema_problems(docs, version))
        report.check(f"wiring {what}", wiring_problems(docs))
    report.check(f"files under {args.k8s_dir}", files_problems(args.k8s_dir))
    config_checks(report, builds.values(), args)
    prometheus_check(report, args.k8s_dir, args.promtool)
    if args.k8s_dir in builds:
        self_test(report, builds[args.k8s_dir], args.k8s_dir)
    else:
        report.fail("self-test", [f"{args.k8s_dir} did not build"])

    # The plain closing line CI reads.
    print(f"validate-k8s: {report.passed} passed, {report.failed} failed, {report.skipped} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

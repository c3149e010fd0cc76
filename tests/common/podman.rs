//! Containers for the deploy tests: Debian's podman (rootful, runc), the
//! image built from this checkout once per test binary, local stand-ins for
//! the public base images (`infra/ci/base-images.sh`), and small wrappers that
//! fail with podman's own words.
//!
//! Under `CI=true` a missing tool fails the test with how to install it;
//! elsewhere the test says it was skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use super::in_ci;

/// The tag the tests build `infra/Dockerfile` under.
pub const IMAGE: &str = "localhost/fleetscrape:test";

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `true` when `program` is on `PATH`. When it is not: under CI the test
/// fails with `install`; elsewhere it prints that it was skipped and returns
/// `false`, for the caller to return.
pub fn tool(program: &str, install: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    if path.split(':').any(|dir| Path::new(dir).join(program).is_file()) {
        return true;
    }
    assert!(!in_ci(), "{program} is not installed; under CI=true nothing is skipped. Install it: {install}");
    eprintln!("skipped: {program} is not installed ({install})");
    false
}

/// Whether podman and debootstrap are here (see [`tool`]).
pub fn podman_available() -> bool {
    const INSTALL: &str =
        "apt-get install -y podman runc debootstrap (and /etc/containers/containers.conf as .ci/run writes it)";
    tool("podman", INSTALL) && tool("debootstrap", INSTALL)
}

/// Runs `podman args`, and panics with its stderr unless it succeeds.
pub fn podman(args: &[&str]) -> String {
    let output = podman_output(args);
    assert!(
        output.status.success(),
        "podman {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs `podman args` and returns what it did, success or not.
pub fn podman_output(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap_or_else(|e| panic!("cannot run podman: {e}"))
}

/// What the image build reported, for the tests to print.
#[derive(Debug, Clone)]
pub struct Built {
    /// The stand-in base images used: (Rust build stage, runtime stage, SQLite reader).
    pub rust: String,
    pub runtime: String,
    pub sqlite: String,
    /// Seconds the `podman build` took in this process (None: built by the parent process).
    pub seconds: Option<f64>,
}

/// Builds [`IMAGE`] from this checkout once per test binary (the first caller
/// builds, the others wait), after making the base-image stand-ins. Inside a
/// test re-run in its network namespace, only checks that the parent built it
/// (the build needs crates.io; a run must not).
pub fn image() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let names = base_images();
        if std::env::var_os("FLEETSCRAPE_TEST_NETNS").is_some() {
            assert!(
                podman_output(&["image", "exists", IMAGE]).status.success(),
                "{IMAGE} must be built before the test enters its network namespace"
            );
            return Built { seconds: None, ..names };
        }
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podman-build.log");
        let file = std::fs::File::create(&log).expect("build log");
        let started = Instant::now();
        let status = Command::new("podman")
            .args(["build", "--network", "host", "--format", "docker"])
            .args(["--build-arg", &format!("RUST_IMAGE={}", names.rust)])
            .args(["--build-arg", &format!("RUNTIME_IMAGE={}", names.runtime)])
            .args(["-f", "infra/Dockerfile", "-t", IMAGE, "."])
            .current_dir(root())
            .stderr(file.try_clone().expect("build log"))
            .stdout(file)
            .status()
            .expect("run podman build");
        let seconds = started.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        assert!(
            status.success(),
            "podman build -f infra/Dockerfile failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        eprintln!("built {IMAGE} in {seconds:.0} s (log: {})", log.display());
        Built { seconds: Some(seconds), ..names }
    })
}

/// Makes (or finds current) the local stand-ins of the public base images.
fn base_images() -> Built {
    let output =
        Command::new("bash").arg(root().join("infra/ci/base-images.sh")).output().expect("run infra/ci/base-images.sh");
    assert!(output.status.success(), "infra/ci/base-images.sh failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let names: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    let [runtime, rust, sqlite] = names.as_slice() else {
        panic!("base-images.sh printed {names:?}, not three image names");
    };
    Built { rust: rust.clone(), runtime: runtime.clone(), sqlite: sqlite.clone(), seconds: None }
}

/// A container removed (with `-f`) when dropped, so a failed test leaves none.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_output(&["rm", "-f", "-t", "0", &self.0]);
    }
}

/// A named volume removed when dropped.
pub struct Volume(pub String);

impl Volume {
    /// Creates a fresh volume `name` (an old one of that name is removed first).
    pub fn create(name: &str) -> Self {
        let _ = podman_output(&["volume", "rm", "-f", name]);
        podman(&["volume", "create", name]);
        Self(name.to_string())
    }

    /// Where the volume's files are on this host (rootful podman).
    pub fn mountpoint(&self) -> PathBuf {
        PathBuf::from(podman(&["volume", "inspect", "--format", "{{.Mountpoint}}", &self.0]))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = podman_output(&["volume", "rm", "-f", &self.0]);
    }
}

/// The numeric user and group of a container's main process, read from
/// `/proc` on this host (what the kernel enforces, not what the image claims).
pub fn process_ids(container: &str) -> (u32, u32) {
    let pid = podman(&["inspect", "--format", "{{.State.Pid}}", container]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the container's /proc status");
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("Uid:"), field("Gid:"))
}

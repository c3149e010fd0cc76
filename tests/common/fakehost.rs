//! Fake EC2 hosts: a real node_exporter (Debian's `prometheus-node-exporter`)
//! per emulated instance, reading a procfs/sysfs tree of its own, so it
//! reports that instance's id (DMI `board_asset_tag`, and/or the textfile
//! metric) and CPU counters this harness drives at a chosen busy level.
//!
//! Each host also carries a signature: a constant `nice` counter unique to
//! it, so a stored `node_cpu_seconds_total{mode="nice"}` sample names the host
//! that produced it, and any misattribution shows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::free_port;

/// Where the exporter tells who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `node_dmi_info{board_asset_tag}` (a Nitro host).
    Dmi,
    /// Only the textfile metric `ec2_instance_info{instance_id}`.
    Textfile,
    /// Nothing (a non-Nitro host without the textfile).
    None,
}

const TICKS: f64 = 100.0; // USER_HZ
/// CPUs of every fake host.
pub const CPUS: usize = 4;

/// Busy and idle time of each CPU, continuous, in ticks. `/proc/stat` shows
/// whole ticks, CPU `k` rounded at phase `k / CPUS`, so that (Hermite's
/// identity, Σₖ⌊x + k/n⌋ = ⌊n·x⌋) the sum over CPUs is exact to one tick, as a
/// kernel's is: a ratio of counter deltas is then within 1 tick of the set
/// level over the interval's CPU time.
#[derive(Debug)]
struct Cpu {
    busy: f64,
    user: f64,
    idle: f64,
    last: Instant,
}

/// A running fake host.
pub struct FakeHost {
    /// The instance id it reports.
    pub instance_id: String,
    /// `127.0.0.1:port` of its exporter.
    pub address: String,
    /// `node_cpu_seconds_total{mode="nice"}` of every CPU, unique per host.
    pub signature: f64,
    dir: tempfile::TempDir,
    child: Option<Child>,
    cpu: Arc<Mutex<Cpu>>,
    driver: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/fake-host")
}

impl FakeHost {
    /// Starts a host reporting `instance_id`, `busy` (0..1) of its [`CPUS`] CPUs
    /// busy, with `signature` nice ticks.
    pub fn start(instance_id: &str, busy: f64, signature: u32, identity: Identity) -> Self {
        let dir = tempfile::tempdir().expect("host dir");
        copy_tree(&fixture(), dir.path());
        let dmi_tag = if identity == Identity::Dmi { instance_id } else { "" };
        std::fs::write(dir.path().join("sys/class/dmi/id/board_asset_tag"), format!("{dmi_tag}\n")).expect("dmi");
        let textfile = dir.path().join("textfile/ec2.prom");
        if identity == Identity::None || identity == Identity::Dmi {
            std::fs::remove_file(&textfile).expect("no textfile");
        } else {
            let text =
                format!("# TYPE ec2_instance_info gauge\nec2_instance_info{{instance_id=\"{instance_id}\"}} 1\n");
            std::fs::write(&textfile, text).expect("textfile");
        }
        let cpu = Arc::new(Mutex::new(Cpu { busy, user: 100_000.0, idle: 1_500_000.0, last: Instant::now() }));
        let signature_ticks = f64::from(signature);
        write_stat(dir.path(), &cpu.lock().unwrap(), signature_ticks);
        let mut host = Self {
            instance_id: instance_id.into(),
            address: String::new(),
            signature: signature_ticks / TICKS,
            dir,
            child: None,
            cpu,
            driver: None,
            stop: Arc::default(),
        };
        host.spawn_exporter();
        host.spawn_driver(signature_ticks);
        host
    }

    fn spawn_exporter(&mut self) {
        let port = free_port();
        self.address = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus-node-exporter")
            .current_dir(self.dir.path())
            .args([
                &format!("--web.listen-address={}", self.address),
                "--path.sysfs=sys",
                "--path.procfs=proc",
                "--path.rootfs=.",
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.dmi",
                "--collector.uname",
                "--collector.stat",
                "--collector.loadavg",
                "--collector.meminfo",
                "--collector.textfile",
                "--collector.textfile.directory=textfile",
                "--log.level=error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus-node-exporter ({e}); install it: apt-get install -y prometheus-node-exporter"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(Instant::now() < deadline, "node_exporter did not listen on {}", self.address);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn_driver(&mut self, signature_ticks: f64) {
        let (cpu, dir, stop) = (Arc::clone(&self.cpu), self.dir.path().to_path_buf(), Arc::clone(&self.stop));
        self.driver = Some(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                {
                    let mut cpu = cpu.lock().unwrap();
                    let elapsed = cpu.last.elapsed().as_secs_f64();
                    cpu.last = Instant::now();
                    cpu.user += cpu.busy * elapsed * TICKS;
                    cpu.idle += (1.0 - cpu.busy) * elapsed * TICKS;
                    write_stat(&dir, &cpu, signature_ticks);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }

    /// Changes how busy the CPUs are from now on.
    pub fn set_busy(&self, busy: f64) {
        self.cpu.lock().unwrap().busy = busy;
    }

    /// Stops the exporter (the instance's exporter is down).
    pub fn stop_exporter(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes proc/stat atomically (rename); the exporter reads it at each scrape.
/// Only `user` and `idle` move; the other modes are constant (`nice` is the
/// host's signature).
fn write_stat(dir: &Path, cpu: &Cpu, nice: f64) {
    let phase = |k: usize| k as f64 / CPUS as f64;
    let cpus: Vec<(u64, u64)> =
        (0..CPUS).map(|k| ((cpu.user + phase(k)).floor() as u64, (cpu.idle + phase(k)).floor() as u64)).collect();
    let (user, idle): (u64, u64) = cpus.iter().fold((0, 0), |(u, i), (cu, ci)| (u + cu, i + ci));
    let n = CPUS as u64;
    let nice = nice as u64;
    let mut text =
        format!("cpu  {user} {} {} {idle} {} 0 {} {} 0 0\n", n * nice, n * 40000, n * 2000, n * 750, n * 150);
    for (k, (user, idle)) in cpus.iter().enumerate() {
        text.push_str(&format!("cpu{k} {user} {nice} 40000 {idle} 2000 0 750 150 0 0\n"));
    }
    text.push_str(
        "intr 5000000 0\nctxt 9000000\nbtime 1732500000\nprocesses 45000\nprocs_running 2\nprocs_blocked 0\n",
    );
    let temp = dir.join("proc/.stat.tmp");
    std::fs::write(&temp, text).expect("write stat");
    std::fs::rename(&temp, dir.join("proc/stat")).expect("rename stat");
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
        self.stop_exporter();
    }
}

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
/// `/proc/stat`'s modes, in its column order (guest columns are always 0).
pub const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
const USER: usize = 0;
const NICE: usize = 1;
const IDLE: usize = 3;
/// Shares of every CPU's time a host with figures spends in the modes
/// other than user, nice and idle (the rest of `busy` is user).
pub const BUSY_MODES: [(&str, f64); 5] =
    [("system", 0.10), ("iowait", 0.05), ("irq", 0.01), ("softirq", 0.02), ("steal", 0.02)];

/// A network device of a host with figures: its counters' rates per second,
/// each at least 200/s, so that one count is under 1 % of a 2-second bucket.
#[derive(Debug, Clone, Copy)]
pub struct NetDevice {
    pub name: &'static str,
    pub receive_bytes: f64,
    pub receive_packets: f64,
    pub receive_errs: f64,
    pub receive_drop: f64,
    pub transmit_bytes: f64,
    pub transmit_packets: f64,
    pub transmit_errs: f64,
    pub transmit_drop: f64,
}

/// The devices of `proc/net/dev` (`lo` too, which node_exporter leaves out by default).
pub const NET_DEVICES: [NetDevice; 2] = [
    NetDevice {
        name: "eth0",
        receive_bytes: 1_250_000.0,
        receive_packets: 1_000.0,
        receive_errs: 500.0,
        receive_drop: 250.0,
        transmit_bytes: 250_000.0,
        transmit_packets: 5_000.0,
        transmit_errs: 400.0,
        transmit_drop: 200.0,
    },
    NetDevice {
        name: "ens6",
        receive_bytes: 80_000.0,
        receive_packets: 200.0,
        receive_errs: 0.0,
        receive_drop: 0.0,
        transmit_bytes: 3_000_000.0,
        transmit_packets: 2_500.0,
        transmit_errs: 0.0,
        transmit_drop: 0.0,
    },
];

/// A block device of `proc/diskstats`: its counters' rates per second.
#[derive(Debug, Clone, Copy)]
pub struct Disk {
    pub name: &'static str,
    pub reads: f64,
    pub writes: f64,
    /// 512-byte sectors.
    pub sectors_read: f64,
    pub sectors_written: f64,
    /// Milliseconds spent doing I/O per second (1000 = 100 % busy).
    pub io_ms: f64,
}

pub const DISKS: [Disk; 2] = [
    Disk {
        name: "nvme0n1",
        reads: 200.0,
        writes: 300.0,
        sectors_read: 2_048.0,
        sectors_written: 4_096.0,
        io_ms: 250.0,
    },
    Disk { name: "nvme1n1", reads: 250.0, writes: 400.0, sectors_read: 512.0, sectors_written: 16_384.0, io_ms: 600.0 },
];

/// A mount of `proc/1/mounts`, and the real directory node_exporter's
/// statfs(2) of it lands on (`--path.rootfs` + mount point): quiet
/// filesystems, so the test's own statvfs of the same directory is the truth.
#[derive(Debug, Clone, Copy)]
pub struct Mount {
    pub device: &'static str,
    pub mountpoint: &'static str,
    pub fstype: &'static str,
    /// What statfs reads: `None` for the root (the host's rootfs directory,
    /// itself in /dev/shm).
    pub target: Option<&'static str>,
    /// Whether a dashboard shows it (1860 leaves out `rootfs` and tmpfs).
    pub shown: bool,
}

pub const MOUNTS: [Mount; 4] = [
    Mount { device: "rootfs", mountpoint: "/", fstype: "rootfs", target: None, shown: false },
    Mount { device: "/dev/nvme0n1p1", mountpoint: "/", fstype: "ext4", target: None, shown: true },
    Mount { device: "/dev/nvme1n1", mountpoint: "/data", fstype: "xfs", target: Some("/dev"), shown: true },
    Mount { device: "tmpfs", mountpoint: "/scratch", fstype: "tmpfs", target: Some("/dev/shm"), shown: false },
];

/// `proc/meminfo` of a host with figures (kB): 12 % RAM used, 25 % swap used.
pub const MEMINFO_KB: [(&str, u64); 8] = [
    ("MemTotal", 7_936_528),
    ("MemFree", 5_120_432),
    ("MemAvailable", 6_984_216),
    ("Buffers", 102_400),
    ("Cached", 1_843_200),
    ("SReclaimable", 65_536),
    ("SwapTotal", 2_097_152),
    ("SwapFree", 1_572_864),
];
/// `proc/loadavg` of a host with figures: 50 %, 25 %, 12.5 % of its CPUs.
pub const LOADAVG: [f64; 3] = [2.0, 1.0, 0.5];
/// `btime` of every fake host's `/proc/stat`.
pub const BOOT_TIME: f64 = 1_732_500_000.0;

/// Time of each CPU in each mode, continuous, in ticks. `/proc/stat` shows
/// whole ticks, CPU `k` rounded at phase `k / CPUS`, so that (Hermite's
/// identity, Σₖ⌊x + k/n⌋ = ⌊n·x⌋) the sum over CPUs is exact to one tick, as a
/// kernel's is: a ratio of counter deltas is then within 1 tick of the set
/// level over the interval's CPU time.
#[derive(Debug)]
struct Cpu {
    ticks: [f64; 8],
    /// Share of each CPU's time per mode; `nice` stays 0 (the signature).
    shares: [f64; 8],
    last: Instant,
}

impl Cpu {
    fn new(busy: f64, figures: bool) -> Self {
        let ticks = [100_000.0, 0.0, 40_000.0, 1_500_000.0, 2_000.0, 0.0, 750.0, 150.0];
        let mut cpu = Self { ticks, shares: [0.0; 8], last: Instant::now() };
        if figures {
            for (mode, share) in BUSY_MODES {
                cpu.shares[MODES.iter().position(|m| *m == mode).unwrap()] = share;
            }
        }
        cpu.set_busy(busy);
        cpu
    }

    /// `busy` of every CPU's time not idle: the modes' fixed shares, the rest user.
    fn set_busy(&mut self, busy: f64) {
        let fixed: f64 = (0..8).filter(|&m| m != USER && m != IDLE).map(|m| self.shares[m]).sum();
        assert!(busy >= fixed, "a busy level of at least {fixed} (the fixed modes' shares)");
        self.shares[USER] = busy - fixed;
        self.shares[IDLE] = 1.0 - busy;
    }

    fn advance(&mut self) {
        let elapsed = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        for (ticks, share) in self.ticks.iter_mut().zip(self.shares) {
            *ticks += share * elapsed * TICKS;
        }
    }
}

/// A running fake host.
pub struct FakeHost {
    /// The instance id it reports.
    pub instance_id: String,
    /// `127.0.0.1:port` of its exporter.
    pub address: String,
    /// `node_cpu_seconds_total{mode="nice"}` of every CPU, unique per host.
    pub signature: f64,
    /// Whether it reports figures-level network, disk and filesystem data.
    pub figures: bool,
    dir: tempfile::TempDir,
    /// The host's rootfs (in /dev/shm, for quiet statfs figures), if any.
    rootfs: Option<tempfile::TempDir>,
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

/// Collectors every fake host runs.
const COLLECTORS: [&str; 7] = [
    "--collector.cpu",
    "--collector.dmi",
    "--collector.uname",
    "--collector.stat",
    "--collector.loadavg",
    "--collector.meminfo",
    "--collector.textfile",
];
/// And a host with figures: 1.5.0 reads network devices through netlink by
/// default; `--no-collector.netdev.netlink` makes it read `proc/net/dev`.
const FIGURES_COLLECTORS: [&str; 5] = [
    "--collector.netdev",
    "--no-collector.netdev.netlink",
    "--collector.diskstats",
    "--collector.filesystem",
    "--collector.time",
];

impl FakeHost {
    /// Starts a host reporting `instance_id`, `busy` (0..1) of its [`CPUS`] CPUs
    /// busy (all of it user time), with `signature` nice ticks.
    pub fn start(instance_id: &str, busy: f64, signature: u32, identity: Identity) -> Self {
        Self::launch(instance_id, busy, signature, identity, false)
    }

    /// A host that also reports known figures: CPU time in [`BUSY_MODES`],
    /// [`NET_DEVICES`], [`DISKS`], [`MOUNTS`], [`MEMINFO_KB`], [`LOADAVG`],
    /// and the exporter's clock. `busy` must be at least the modes' 0.2.
    pub fn start_with_figures(instance_id: &str, busy: f64, signature: u32) -> Self {
        Self::launch(instance_id, busy, signature, Identity::Dmi, true)
    }

    fn launch(instance_id: &str, busy: f64, signature: u32, identity: Identity, figures: bool) -> Self {
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
        let rootfs = figures.then(|| write_figures(dir.path()));
        let cpu = Arc::new(Mutex::new(Cpu::new(busy, figures)));
        let signature_ticks = f64::from(signature);
        let started = Instant::now();
        write_stat(dir.path(), &cpu.lock().unwrap(), signature_ticks);
        if figures {
            write_counters(dir.path(), 0.0);
        }
        let mut host = Self {
            instance_id: instance_id.into(),
            address: String::new(),
            signature: signature_ticks / TICKS,
            figures,
            dir,
            rootfs,
            child: None,
            cpu,
            driver: None,
            stop: Arc::default(),
        };
        host.spawn_exporter();
        host.spawn_driver(signature_ticks, started);
        host
    }

    /// Writes `ec2_instance_info{instance_id}` for the textfile collector
    /// now, as an operator fixing a host without identity would.
    pub fn write_textfile_identity(&self) {
        let text =
            format!("# TYPE ec2_instance_info gauge\nec2_instance_info{{instance_id=\"{}\"}} 1\n", self.instance_id);
        let path = self.dir.path().join("textfile/ec2.prom");
        let staged = path.with_extension("tmp");
        std::fs::write(&staged, text).expect("textfile");
        std::fs::rename(&staged, &path).expect("textfile in place");
    }

    /// Where `mount`'s statfs lands: the truth for its filesystem figures.
    pub fn statfs_path(&self, mount: &Mount) -> PathBuf {
        match mount.target {
            Some(target) => PathBuf::from(target),
            None => self.rootfs.as_ref().expect("a host with figures").path().to_path_buf(),
        }
    }

    fn spawn_exporter(&mut self) {
        let port = free_port();
        self.address = format!("127.0.0.1:{port}");
        let rootfs = self.rootfs.as_ref().map_or_else(|| ".".to_string(), |r| r.path().display().to_string());
        let mut args = vec![
            format!("--web.listen-address={}", self.address),
            "--path.sysfs=sys".into(),
            "--path.procfs=proc".into(),
            format!("--path.rootfs={rootfs}"),
            "--collector.disable-defaults".into(),
            "--collector.textfile.directory=textfile".into(),
            "--log.level=error".into(),
        ];
        args.extend(COLLECTORS.iter().map(|c| c.to_string()));
        if self.figures {
            args.extend(FIGURES_COLLECTORS.iter().map(|c| c.to_string()));
        }
        let child = Command::new("prometheus-node-exporter")
            .current_dir(self.dir.path())
            .args(&args)
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

    fn spawn_driver(&mut self, signature_ticks: f64, started: Instant) {
        let (cpu, dir, stop) = (Arc::clone(&self.cpu), self.dir.path().to_path_buf(), Arc::clone(&self.stop));
        let figures = self.figures;
        // A counter read by a scrape is up to one period stale: 5 ms is
        // 0.25 % of a 2 s interval's increase, for the rate checks.
        let period = Duration::from_millis(if figures { 5 } else { 20 });
        self.driver = Some(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                {
                    let mut cpu = cpu.lock().unwrap();
                    cpu.advance();
                    write_stat(&dir, &cpu, signature_ticks);
                }
                if figures {
                    write_counters(&dir, started.elapsed().as_secs_f64());
                }
                std::thread::sleep(period);
            }
        }));
    }

    /// Changes how busy the CPUs are from now on.
    pub fn set_busy(&self, busy: f64) {
        self.cpu.lock().unwrap().set_busy(busy);
    }

    /// Stops the exporter (the instance's exporter is down).
    pub fn stop_exporter(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Replaces `name` under `dir` atomically (rename): the exporter reads it at each scrape.
fn replace(dir: &Path, name: &str, text: &str) {
    let temp = dir.join(format!("{name}.tmp"));
    std::fs::write(&temp, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    std::fs::rename(&temp, dir.join(name)).unwrap_or_else(|e| panic!("rename {name}: {e}"));
}

/// Writes proc/stat. `nice` stays constant: it is the host's signature.
fn write_stat(dir: &Path, cpu: &Cpu, nice: f64) {
    let phase = |k: usize| k as f64 / CPUS as f64;
    let per_cpu: Vec<[u64; 8]> = (0..CPUS)
        .map(|k| {
            let mut modes = [0u64; 8];
            for (m, value) in modes.iter_mut().enumerate() {
                *value = if m == NICE { nice as u64 } else { (cpu.ticks[m] + phase(k)).floor() as u64 };
            }
            modes
        })
        .collect();
    let columns = |modes: &[u64; 8]| modes.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let mut total = [0u64; 8];
    for modes in &per_cpu {
        for (t, v) in total.iter_mut().zip(modes) {
            *t += v;
        }
    }
    let mut text = format!("cpu  {} 0 0\n", columns(&total));
    for (k, modes) in per_cpu.iter().enumerate() {
        text.push_str(&format!("cpu{k} {} 0 0\n", columns(modes)));
    }
    text.push_str(&format!(
        "intr 5000000 0\nctxt 9000000\nbtime {BOOT_TIME}\nprocesses 45000\nprocs_running 2\nprocs_blocked 0\n"
    ));
    replace(&dir.join("proc"), "stat", &text);
}

/// Writes the constant figures (meminfo, loadavg, mounts) and the host's
/// rootfs; returns the rootfs.
fn write_figures(dir: &Path) -> tempfile::TempDir {
    let proc = dir.join("proc");
    let meminfo: String = MEMINFO_KB.iter().map(|(key, kb)| format!("{key}: {kb:>15} kB\n")).collect();
    std::fs::write(proc.join("meminfo"), meminfo).expect("meminfo");
    let [one, five, fifteen] = LOADAVG;
    std::fs::write(proc.join("loadavg"), format!("{one:.2} {five:.2} {fifteen:.2} 2/210 12345\n")).expect("loadavg");
    std::fs::create_dir_all(proc.join("1")).expect("proc/1");
    std::fs::create_dir_all(proc.join("net")).expect("proc/net");
    let mounts: String =
        MOUNTS.iter().map(|m| format!("{} {} {} rw,relatime 0 0\n", m.device, m.mountpoint, m.fstype)).collect();
    std::fs::write(proc.join("1/mounts"), mounts).expect("mounts");
    let rootfs =
        tempfile::Builder::new().prefix("fleetscrape-rootfs-").tempdir_in("/dev/shm").expect("rootfs in /dev/shm");
    for mount in MOUNTS {
        if let Some(target) = mount.target {
            std::os::unix::fs::symlink(target, rootfs.path().join(mount.mountpoint.trim_start_matches('/')))
                .expect("mount point symlink");
        }
    }
    rootfs
}

/// Writes proc/net/dev and proc/diskstats at `elapsed` seconds since start.
fn write_counters(dir: &Path, elapsed: f64) {
    let at = |base: f64, rate: f64| (base + rate * elapsed).floor() as u64;
    let mut net = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo: 123456 1000 0 0 0 0 0 0 123456 1000 0 0 0 0 0 0\n",
    );
    for d in NET_DEVICES {
        net.push_str(&format!(
            "{:>6}: {} {} {} {} 0 0 0 0 {} {} {} {} 0 0 0 0\n",
            d.name,
            at(9e9, d.receive_bytes),
            at(8e6, d.receive_packets),
            at(1e3, d.receive_errs),
            at(5e2, d.receive_drop),
            at(7e9, d.transmit_bytes),
            at(6e6, d.transmit_packets),
            at(4e2, d.transmit_errs),
            at(2e2, d.transmit_drop),
        ));
    }
    replace(&dir.join("proc/net"), "dev", &net);
    let mut disks = String::new();
    for (i, d) in DISKS.iter().enumerate() {
        // major minor name, reads merged sectors ms, writes merged sectors ms,
        // in-flight io_ms weighted_ms, discards (4), flushes (2).
        disks.push_str(&format!(
            "259 {} {} {} 0 {} {} {} 0 {} {} 0 {} {} 0 0 0 0 0 0\n",
            i,
            d.name,
            at(1e6, d.reads),
            at(4e7, d.sectors_read),
            at(2e6, d.reads * 0.5),
            at(3e6, d.writes),
            at(9e7, d.sectors_written),
            at(5e6, d.writes * 0.8),
            at(8e6, d.io_ms),
            at(9e6, d.io_ms * 1.5),
        ));
    }
    replace(&dir.join("proc"), "diskstats", &disks);
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

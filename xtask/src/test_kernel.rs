//! `cargo xtask test-kernel`: the seed recipe on the kernels bare-metal nodes run, booted
//! under qemu (software emulation: KVM does not work on these machines). Debian 11's 5.10
//! and Debian 12's 6.1 cloud kernels, as Debian packages them (their modules included),
//! are downloaded once into a cache; each boots an initramfs with busybox, iproute2, iperf3
//! and the plugin, whose /init (xtask/guest/) builds a node with an uplink to a switch and
//! an external host, runs `flatbridge node setup`, adds pods with the seed config, checks
//! pod↔pod and external host↔pod traffic on the fast path by its counters, deletes every
//! pod and checks that nothing is left. The guest prints `FB-RESULT` lines; this reads them.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{exec, output, root};

/// Where downloaded kernel packages are kept between runs.
const CACHE: &str = "/var/cache/flatbridge/kernels";
/// How long one guest may take (boot, recipe, power-off) under emulation.
const GUEST_TIMEOUT: Duration = Duration::from_secs(420);

/// A kernel to boot: a name for people, the Debian suite that has it, and the package
/// name's pattern (the newest version in the suite is taken).
struct Kernel {
    name: &'static str,
    /// `None`: the machine's own apt sources (bookworm); otherwise a sources line of our own.
    sources: Option<&'static str>,
    pattern: &'static str,
}

const KERNELS: [Kernel; 2] = [
    Kernel {
        name: "Debian 11 (5.10)",
        sources: Some("deb http://deb.debian.org/debian bullseye main"),
        pattern: "^linux-image-5\\.10\\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Kernel {
        name: "Debian 12 (6.1)",
        sources: None,
        pattern: "^linux-image-6\\.1\\.0-[0-9]+-cloud-amd64-unsigned$",
    },
];

pub fn run() -> anyhow::Result<()> {
    crate::build::ebpf(true)?;
    exec(
        Command::new(env!("CARGO"))
            .args(["build", "-p", "flatbridge", "--release"])
            .current_dir(root()),
    )?;
    let plugin = root().join("target/release/flatbridge");
    let program_tests = program_tests()?;
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for kernel in &KERNELS {
        let started = Instant::now();
        match boot(kernel, &plugin, &program_tests) {
            Ok(report) => summary.push(format!(
                "{}: {report} ({:.0} s)",
                kernel.name,
                started.elapsed().as_secs_f64()
            )),
            Err(error) => failures.push(format!("{}: {error:#}", kernel.name)),
        }
    }
    for line in &summary {
        eprintln!("test-kernel: {line}");
    }
    if !failures.is_empty() {
        bail!("the seed recipe failed on {}", failures.join("; "));
    }
    Ok(())
}

/// The BPF_PROG_TEST_RUN suite (`tests/tests/datapath_programs.rs`), built, for the guest
/// to run on its kernel's verifier and programs.
fn program_tests() -> anyhow::Result<PathBuf> {
    let built = output(
        Command::new(env!("CARGO"))
            .args([
                "test",
                "-p",
                "flatbridge-tests",
                "--test",
                "datapath_programs",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(root()),
    )?;
    if !built.status.success() {
        bail!(
            "building the program tests failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "datapath_programs")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo named no executable for the program tests")
}

/// The kernel package's unpacked tree in the cache (downloaded when missing) and its
/// version string (the modules directory's name).
fn fetch(kernel: &Kernel) -> anyhow::Result<(PathBuf, String)> {
    let cache = Path::new(CACHE);
    std::fs::create_dir_all(cache)?;
    let mut apt_options: Vec<String> = Vec::new();
    if let Some(sources) = kernel.sources {
        // Lists and caches of our own: the machine's apt state is not touched.
        let dir = cache.join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let list = dir.join("sources.list");
        std::fs::write(&list, format!("{sources}\n"))?;
        apt_options = vec![
            format!("-o=Dir::Etc::sourcelist={}", list.display()),
            "-o=Dir::Etc::sourceparts=-".into(),
            format!("-o=Dir::State::Lists={}", dir.join("lists").display()),
            format!("-o=Dir::Cache={}", dir.join("cache").display()),
        ];
    }
    let mut package = newest(kernel, &apt_options)?;
    if package.is_none() && kernel.sources.is_some() {
        exec(Command::new("apt-get").args(&apt_options).args(["update", "-q"]))?;
        package = newest(kernel, &apt_options)?;
    }
    let package = package.with_context(|| format!("no package {} in the apt sources", kernel.pattern))?;
    fetch_package(&package, &apt_options, cache)
}

/// The newest package matching the kernel's pattern that apt knows of.
fn newest(kernel: &Kernel, apt_options: &[String]) -> anyhow::Result<Option<String>> {
    let search =
        output(
            Command::new("apt-cache")
                .args(apt_options)
                .args(["search", "--names-only", kernel.pattern]),
        )?;
    let mut packages: Vec<String> = String::from_utf8_lossy(&search.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    packages.sort_by_key(|package| version_key(package));
    Ok(packages.pop())
}

/// The numbers of a package name, for picking the newest ABI (5.10.0-32 after 5.10.0-9).
fn version_key(package: &str) -> Vec<u64> {
    package
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn fetch_package(package: &str, apt_options: &[String], cache: &Path) -> anyhow::Result<(PathBuf, String)> {
    let version = package
        .strip_prefix("linux-image-")
        .and_then(|rest| rest.strip_suffix("-unsigned"))
        .with_context(|| format!("unexpected kernel package name {package}"))?
        .to_owned();
    let tree = cache.join(&version);
    if tree.join("boot").join(format!("vmlinuz-{version}")).exists() {
        return Ok((tree, version));
    }
    let downloads = cache.join("debs");
    std::fs::create_dir_all(&downloads)?;
    exec(
        Command::new("apt-get")
            .args(apt_options)
            .args(["download", "-q", package])
            .current_dir(&downloads),
    )?;
    let deb = std::fs::read_dir(&downloads)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package} package"))?;
    let unpacking = cache.join(format!("{version}.partial"));
    let _ = std::fs::remove_dir_all(&unpacking);
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))?;
    std::fs::rename(&unpacking, &tree)?;
    Ok((tree, version))
}

/// Copies `binary` into `root` at `at`, with every shared library `ldd` lists.
fn copy_binary(root: &Path, binary: &Path, at: &str) -> anyhow::Result<()> {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().context("a path with a parent")?)?;
    std::fs::copy(binary, &dest).with_context(|| format!("copy {}", binary.display()))?;
    let ldd = output(Command::new("ldd").arg(binary))?;
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let dest = root.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().context("a path with a parent")?)?;
        if !dest.exists() {
            std::fs::copy(library, &dest).with_context(|| format!("copy {library}"))?;
        }
    }
    Ok(())
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    let found = output(Command::new("sh").args(["-c", &format!("command -v {program}")]))?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("{program} is not installed (run `cargo xtask setup`)");
    }
    Ok(PathBuf::from(path))
}

/// The guest's initramfs for the kernel in `tree`.
fn initramfs(
    tree: &Path,
    version: &str,
    plugin: &Path,
    program_tests: &Path,
    work: &Path,
) -> anyhow::Result<PathBuf> {
    let image_root = work.join("root");
    let _ = std::fs::remove_dir_all(&image_root);
    for dir in ["bin", "proc", "sys", "dev", "run", "tmp", "etc"] {
        std::fs::create_dir_all(image_root.join(dir))?;
    }
    std::fs::copy("/usr/bin/busybox", image_root.join("bin/busybox")).context("copy busybox")?;
    let applets = output(Command::new("/usr/bin/busybox").arg("--list"))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        // iproute2's own ip and tc, not busybox's.
        if !matches!(applet, "ip" | "tc" | "busybox") {
            std::os::unix::fs::symlink("busybox", image_root.join("bin").join(applet))
                .with_context(|| format!("link busybox's applet {applet}"))?;
        }
    }
    for (program, at) in [
        ("ip", "/usr/local/bin/ip"),
        ("tc", "/usr/local/bin/tc"),
        ("iperf3", "/usr/local/bin/iperf3"),
        ("date", "/usr/local/bin/date"),
        // The tests' helpers run `nsenter --net=... ip ...`: busybox's nsenter would run
        // busybox's own `ip` applet (it prefers applets), which cannot make veth pairs.
        ("nsenter", "/usr/local/bin/nsenter"),
    ] {
        copy_binary(&image_root, &which(program)?, at)?;
    }
    copy_binary(&image_root, plugin, "/opt/cni/bin/flatbridge")?;
    copy_binary(&image_root, program_tests, "/opt/tests/datapath_programs")?;
    // The kernel's network modules and what they depend on, indexed for modprobe.
    let modules = Path::new("lib/modules").join(version);
    let guest_modules = image_root.join(&modules);
    std::fs::create_dir_all(guest_modules.join("kernel"))?;
    for sub in ["net", "lib", "crypto", "drivers/net"] {
        let from = tree.join(&modules).join("kernel").join(sub);
        if from.exists() {
            let to = guest_modules.join("kernel").join(sub);
            std::fs::create_dir_all(to.parent().context("parent")?)?;
            exec(Command::new("cp").arg("-r").arg(&from).arg(&to))?;
        }
    }
    for file in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        let from = tree.join(&modules).join(file);
        if from.exists() {
            std::fs::copy(&from, guest_modules.join(file))?;
        }
    }
    exec(Command::new("depmod").arg("-b").arg(&image_root).arg(version))?;
    let guest = root().join("xtask/guest");
    std::fs::copy(guest.join("init.sh"), image_root.join("init")).context("copy /init")?;
    std::fs::set_permissions(
        image_root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::copy(guest.join("recipe.sh"), image_root.join("recipe.sh")).context("copy the recipe")?;
    let image = work.join("initrd.gz");
    exec(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        image_root.display(),
        image.display()
    )))?;
    Ok(image)
}

/// Boots `kernel` with the recipe; the figures it reported.
fn boot(kernel: &Kernel, plugin: &Path, program_tests: &Path) -> anyhow::Result<String> {
    let (tree, version) = fetch(kernel)?;
    let work = root().join("target/test-kernel").join(&version);
    std::fs::create_dir_all(&work)?;
    let image = initramfs(&tree, &version, plugin, program_tests, &work)?;
    let console = work.join("console.log");
    eprintln!(
        "test-kernel: booting {} ({version}) under qemu; console in {}",
        kernel.name,
        console.display()
    );
    let status = Command::new("timeout")
        .arg(GUEST_TIMEOUT.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536"])
        .arg("-kernel")
        .arg(tree.join("boot").join(format!("vmlinuz-{version}")))
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .stdout(std::fs::File::create(&console)?)
        .stderr(std::process::Stdio::inherit())
        .status()
        .context("start qemu-system-x86_64 (run `cargo xtask setup`)")?;
    let log = String::from_utf8_lossy(&std::fs::read(&console)?).into_owned();
    let results: Vec<(&str, &str)> = log
        .lines()
        .filter_map(|line| line.split_once("FB-RESULT ").map(|(_, rest)| rest.trim()))
        .map(|rest| rest.split_once(' ').unwrap_or((rest, "")))
        .collect();
    for (what, value) in &results {
        eprintln!("test-kernel:   {what} {value}");
    }
    if let Some((_, why)) = results.iter().find(|(what, _)| *what == "fail") {
        bail!("{why} (console: {})", console.display());
    }
    if !results.iter().any(|(what, _)| *what == "ok") {
        bail!(
            "the recipe did not finish ({status}; console: {}): {}",
            console.display(),
            log.lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let mut adds: Vec<u64> = results
        .iter()
        .filter(|(what, _)| *what == "add-us")
        .filter_map(|(_, value)| value.parse().ok())
        .collect();
    adds.sort_unstable();
    let p50 = adds.get(adds.len() / 2).copied().unwrap_or_default();
    let value_of = |key: &str| {
        results
            .iter()
            .find(|(what, _)| *what == key)
            .map_or("?", |(_, value)| value)
    };
    Ok(format!(
        "kernel {}, program tests: {}, ADD p50 {:.1} ms over {} (emulated CPU), pod_to_pod {}, uplink_to_pod {}",
        value_of("kernel"),
        value_of("program-tests"),
        p50 as f64 / 1000.0,
        adds.len(),
        value_of("pod-to-pod"),
        value_of("uplink-to-pod"),
    ))
}

//! `ls -l` of 10,000 files opens none of them: counted from outside the daemon, with
//! inotify (IN_OPEN) on the backing directory.

#![allow(clippy::unwrap_used)]

#[path = "common/fsmount.rs"]
mod fsmount;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use fsmount::Mounted;

/// Runs `f` while inotifywait watches `dir` for opens; returns the names opened.
fn opens_during(dir: &std::path::Path, f: impl FnOnce()) -> Vec<String> {
    let mut w = Command::new("inotifywait")
        .args(["-m", "-e", "open", "--format", "%e %f"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("inotifywait (apt-get install inotify-tools)");
    let mut err = BufReader::new(w.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 || line.contains("Watches established") {
            break;
        }
    }
    f();
    std::thread::sleep(Duration::from_millis(500));
    let _ = w.kill();
    let out = w.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (ev, name) = l.split_once(' ').unwrap_or((l, ""));
            (!ev.contains("ISDIR") && !name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn ls_l_of_10000_files_opens_none_of_them() {
    let mut m = Mounted::new(&[]);
    std::fs::create_dir(m.p("many")).unwrap();
    for i in 0..10_000 {
        let mut f = std::fs::File::create(m.p(&format!("many/file{i:05}"))).unwrap();
        f.write_all(format!("content of file {i}").as_bytes())
            .unwrap();
    }
    // Remount: nothing cached in the kernel or the daemon.
    m.unmount();
    m.mount(&[]).unwrap();
    let dir = m.b("many");
    let mnt_many = m.p("many");
    let mut listing = String::new();
    let opened = opens_during(&dir, || {
        let out = Command::new("ls")
            .arg("-l")
            .arg(&mnt_many)
            .output()
            .unwrap();
        assert!(out.status.success());
        listing = String::from_utf8_lossy(&out.stdout).into_owned();
    });
    assert_eq!(
        listing.lines().filter(|l| l.starts_with('-')).count(),
        10_000
    );
    // Sizes are right without opening anything.
    assert!(
        listing.contains(" 20 ") || listing.contains(" 23 "),
        "sizes in ls -l"
    );
    assert!(
        opened.is_empty(),
        "ls -l opened {} files, e.g. {:?}",
        opened.len(),
        &opened[..opened.len().min(5)]
    );
    // Control: reading one file is seen by the same counter.
    let opened = opens_during(&dir, || {
        assert_eq!(
            std::fs::read(m.p("many/file00042")).unwrap(),
            b"content of file 42"
        );
    });
    assert!(
        opened.iter().any(|n| n == "file00042"),
        "counter saw {opened:?}"
    );
}

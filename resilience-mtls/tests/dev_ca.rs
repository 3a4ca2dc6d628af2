//! The dev CA's files: private keys readable by their owner only, and no workload's files
//! written over another's.

use resilience_mtls::dev_ca::write_workloads;
use std::path::PathBuf;

fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dev-ca-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn workloads(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

#[cfg(unix)]
#[test]
fn a_key_is_owner_only_even_over_a_leftover_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let out = dir("mode");
    std::fs::create_dir_all(&out).unwrap();
    // What an interrupted earlier run, or another user, left behind: world-readable.
    let leftover = out.join("orders-key.pem.tmp");
    std::fs::write(&leftover, "old").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();

    write_workloads(&out, "example.org", &workloads(&["ns/shop/sa/orders"])).unwrap();
    let mode = std::fs::metadata(out.join("orders-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(!leftover.exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn workloads_whose_files_would_clash_are_refused_before_anything_is_written() {
    for (paths, message) in [
        (
            &["ns/a/sa/api", "ns/b/sa/api"][..],
            "would both write api.pem",
        ),
        (&["ns/shop/sa/ca"][..], "over the CA"),
        // One's key and the other's certificate share a name.
        (
            &["ns/a/sa/orders", "ns/a/sa/orders-key"][..],
            "would both write orders-key.pem",
        ),
    ] {
        let out = dir("clash");
        let error = write_workloads(&out, "example.org", &workloads(paths))
            .unwrap_err()
            .to_string();
        assert!(error.contains(message), "{paths:?}: {error}");
        assert!(!out.exists(), "{paths:?}: nothing written");
    }
}

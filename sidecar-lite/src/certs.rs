//! `sidecar-lite certs`: a development CA and workload certificates, from resilience-mtls's
//! dev CA.

use resilience_mtls::{MaterialPaths, dev_ca::DevCa};
use resilience_timeout::BoxError;
use std::path::{Path, PathBuf};

/// Creates a CA for `trust_domain` and one certificate per workload path (such as
/// `ns/shop/sa/orders`), writing `ca.pem`, `<name>.pem` and `<name>-key.pem` into `out`, where
/// `<name>` is the path's last segment. Returns the files written.
pub fn write(
    out: &Path,
    trust_domain: &str,
    workloads: &[String],
) -> Result<Vec<PathBuf>, BoxError> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let ca = DevCa::new(trust_domain)?;
    let mut written = vec![out.join("ca.pem")];
    for workload in workloads {
        let name = workload
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("workload `{workload}` has no name"))?;
        let paths = MaterialPaths::new(
            out.join(format!("{name}.pem")),
            out.join(format!("{name}-key.pem")),
            out.join("ca.pem"),
        );
        ca.workload(workload)?
            .write(&paths, ca.trust_pem())
            .map_err(|e| format!("cannot write {}: {e}", paths.cert.display()))?;
        written.push(paths.cert.clone());
        written.push(paths.key.clone());
    }
    Ok(written)
}

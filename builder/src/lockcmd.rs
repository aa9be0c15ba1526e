//! `cvm-image lock`: resolve the spec's packages (and extra kernel profiles) to exact versions and
//! sha256 from the Debian archive, and write `cvm-image.lock`.

use crate::fetch;
use crate::inputs::apt::{Apt, PackageRequest};
use crate::inputs::lock::Lockfile;
use crate::spec::Spec;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn lock(
    spec: &Spec,
    extra_kernels: &[PathBuf],
    lock: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> Result<()> {
    let fetch::InputPaths {
        lock: lock_path,
        cache,
    } = fetch::InputPaths::resolve(spec, lock, cache);
    let mut wanted = fetch::requests(spec);
    for k in extra_kernels {
        let profile = crate::spec::load_kernel_profile(k)?;
        wanted.push((profile.package, profile.suite));
    }
    wanted.sort();
    wanted.dedup();
    let mut suites: Vec<String> = wanted.iter().map(|(_, s)| s.clone()).collect();
    suites.sort();
    suites.dedup();

    let apt = Apt::new(&cache, &suites, &fetch::mirrors(spec))?;
    apt.update()?;
    let mut lockfile = if lock_path.exists() {
        Lockfile::load(&lock_path)?
    } else {
        Lockfile::default()
    };
    for (name, suite) in wanted {
        let pkg = apt.resolve(&PackageRequest {
            name: name.clone(),
            suite: suite.clone(),
        })?;
        println!(
            "{:<40} {:<28} {:<20} sha256 {}",
            pkg.name,
            pkg.version,
            pkg.suite,
            &pkg.sha256[..16]
        );
        lockfile.packages.retain(|p| p.name != pkg.name);
        lockfile.packages.push(pkg);
    }
    lockfile.save(&lock_path)?;
    println!("wrote {}", display(&lock_path));
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

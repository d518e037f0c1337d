//! Sets `PUSH_BUILD_COMMIT` (the `commit` label of `push_build_info`): the
//! variable of the same name when the build is given one (image builds,
//! whose context has no `.git`), else `git rev-parse --short HEAD`, else
//! `unknown`. Never fails the build.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PUSH_BUILD_COMMIT");
    let given = std::env::var("PUSH_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| {
        let commit = git(&["rev-parse", "--short", "HEAD"])?;
        // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch
        // it names (a commit), loose or packed. Only existing files are
        // named: a missing one would make cargo rerun this on every build.
        let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(git(&["rev-parse", "--git-path", &branch]));
        }
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
        let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
        for path in watch.into_iter().flatten() {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        Some(commit)
    });
    println!(
        "cargo:rustc-env=PUSH_BUILD_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

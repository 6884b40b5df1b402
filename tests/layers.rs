//! The crate's layers import only from below (see the table in `src/lib.rs`):
//! every `crate::<layer>` path in a layer's code names a lower layer.

use std::path::Path;

/// Bottom to top.
const LAYERS: [&str; 11] = ["sys", "dist", "io", "data", "sim", "model", "diffusion", "memory", "eval", "map", "train"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layers a piece of code names as `crate::<layer>` (comments skipped).
fn imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn each_layer_imports_only_from_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "layer {layer} has no files");
        for f in files {
            let code = std::fs::read_to_string(&f).unwrap();
            for name in imports(&code) {
                match LAYERS.iter().position(|l| *l == name) {
                    Some(r) if r <= rank => {} // its own layer or one below
                    Some(_) => violations.push(format!("{}: {layer} imports crate::{name}", f.display())),
                    None => violations.push(format!("{}: crate::{name} is no layer", f.display())),
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // the crate root holds nothing but the layers
    let mut top: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lib.rs")
        .collect();
    top.sort();
    let mut want: Vec<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(top, want);
}

#[test]
fn the_checker_sees_imports() {
    assert_eq!(
        imports("use crate::io::npy;\n// crate::train in a comment\nlet x = crate::sys::mix(1, 2, 3);"),
        ["io", "sys"]
    );
}

//! `cargo run -p keymesh-error-codes [-- --check]`: regenerate
//! `services/edge/src/huawei/codes.rs` from the published table, or (with
//! `--check`) only report whether it is up to date.

use std::process::ExitCode;

use keymesh_error_codes::{CSV_PATH, OUT_PATH, REGENERATE, render, workspace_root};

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    match run(check) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error-codes: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(check: bool) -> Result<ExitCode, String> {
    let root = workspace_root();
    let (csv, out) = (root.join(CSV_PATH), root.join(OUT_PATH));
    let text = std::fs::read_to_string(&csv).map_err(|e| format!("{}: {e}", csv.display()))?;
    let code = render(&text)?;
    let current = std::fs::read_to_string(&out).unwrap_or_default();
    if current == code {
        println!("{OUT_PATH} is up to date with {CSV_PATH}");
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        eprintln!("{OUT_PATH} is out of date with {CSV_PATH}: run `{REGENERATE}`");
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(&out, code).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {OUT_PATH} from {CSV_PATH}");
    Ok(ExitCode::SUCCESS)
}

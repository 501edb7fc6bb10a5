//! Compiles the .proto files with protox (pure Rust), so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "keymesh/crypto/v1/crypto.proto",
        "keymesh/crypto/v1/vault.proto",
        "keymesh/ratelimit/v1/ratelimit.proto",
        // Envoy's rate limit service (wire-compatible subset), served by the
        // rate-limiter for Envoy/Istio ingresses.
        "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        "envoy/service/ratelimit/v3/rls.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}

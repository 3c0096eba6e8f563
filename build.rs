//! Generates containerd's snapshots gRPC service (server side only) from
//! the .proto files copied from containerd into src/snapshotter/proto/.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "src/snapshotter/proto";
    println!("cargo:rerun-if-changed={root}");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[
                format!("{root}/types/mount.proto"),
                format!("{root}/services/snapshots/v1/snapshots.proto"),
            ],
            &[root.to_string(), "/usr/include".to_string()],
        )?;
    Ok(())
}

//! A layer's bytes checked against the digest its image gives.

use std::sync::Arc;

use crate::digest::{Algorithm, Digest};
use crate::source::{LayerSource, ReadMeter};

use super::StackError;

/// Hashes the layer's bytes and compares them with `expected`. A plain
/// tar's indexing pass seeks over file data, so this is a read of the whole
/// layer that the pass alone would not make; it is paid once, when the
/// layer is first indexed.
pub(super) fn check_digest(
    layer: &LayerSource,
    n: usize,
    expected: &Digest,
    meter: Option<&Arc<ReadMeter>>,
) -> Result<(), StackError> {
    if expected.algorithm() != Algorithm::Sha256 {
        return Err(StackError::DigestAlgorithm {
            path: layer.path().to_path_buf(),
            number: n + 1,
            digest: expected.clone(),
        });
    }
    let started = std::time::Instant::now();
    let actual = Digest::from_sha256(layer.sha256(meter)?);
    log::info!(
        "{} (layer {}): {} bytes hashed in {:.2?}",
        layer.path().display(),
        n + 1,
        layer.file_len(),
        started.elapsed()
    );
    compare_digest(layer, n, expected, actual)
}

/// The one comparison of a layer's hashed digest with the one it must
/// have, whether hashed before its pass (a file) or by it (a remote blob).
pub(super) fn compare_digest(
    layer: &LayerSource,
    n: usize,
    expected: &Digest,
    actual: Digest,
) -> Result<(), StackError> {
    if actual == *expected {
        return Ok(());
    }
    Err(StackError::Digest {
        path: layer.path().to_path_buf(),
        number: n + 1,
        offset: layer.offset(),
        len: layer.file_len(),
        expected: expected.clone(),
        actual,
    })
}

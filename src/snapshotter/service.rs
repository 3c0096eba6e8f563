//! The gRPC glue: each request of containerd's snapshots service turned
//! into a call of [`Snapshotter`] on a blocking thread (they touch disks,
//! registries and mounts), and each error into the status code containerd
//! maps back to its own error kind (`NotFound`, `AlreadyExists`, ...),
//! which its image unpacker and garbage collector act on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::api::containerd::services::snapshots::v1 as pb;
use super::api::containerd::types::Mount;
use super::snapshots::{MountSpec, SnapshotError, Snapshotter};
use super::store::{Kind, Snapshot, StoreError};

/// The service containerd's proxy plugin talks to.
pub struct Service {
    snapshotter: Arc<Snapshotter>,
}

impl Service {
    /// Serves `snapshotter`.
    pub fn new(snapshotter: Arc<Snapshotter>) -> Service {
        Service { snapshotter }
    }

    /// Runs `work` on a blocking thread with the snapshotter.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Snapshotter) -> Result<T, SnapshotError> + Send + 'static,
    ) -> Result<T, Status> {
        let snapshotter = Arc::clone(&self.snapshotter);
        let result = tokio::task::spawn_blocking(move || work(&snapshotter))
            .await
            .map_err(|e| Status::internal(format!("{what}: {e}")))?;
        result.map_err(|e| {
            let status = status_of(&e);
            if status.code() == Code::Internal {
                log::error!("{what}: {e}");
            } else {
                log::debug!("{what}: {e}");
            }
            status
        })
    }
}

/// The status containerd reads `e` as.
fn status_of(e: &SnapshotError) -> Status {
    let message = e.to_string();
    match e {
        SnapshotError::Store(StoreError::NotFound(_)) => Status::not_found(message),
        SnapshotError::Store(StoreError::AlreadyExists(_)) => Status::already_exists(message),
        SnapshotError::Store(StoreError::FailedPrecondition { .. }) => {
            Status::failed_precondition(message)
        }
        SnapshotError::InvalidArgument(_) => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

fn sorted(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

fn mounts(specs: Vec<MountSpec>) -> Vec<Mount> {
    specs
        .into_iter()
        .map(|spec| Mount {
            r#type: spec.kind,
            source: spec.source,
            target: String::new(),
            options: spec.options,
        })
        .collect()
}

fn timestamp((seconds, nanos): (i64, u32)) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds,
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

fn info(name: String, snapshot: Snapshot) -> pb::Info {
    pb::Info {
        name,
        parent: snapshot.parent.unwrap_or_default(),
        kind: match snapshot.kind {
            Kind::View => pb::Kind::View,
            Kind::Active => pb::Kind::Active,
            Kind::Committed => pb::Kind::Committed,
        } as i32,
        created_at: Some(timestamp(snapshot.created)),
        updated_at: Some(timestamp(snapshot.updated)),
        labels: snapshot.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        log::debug!("prepare {:?} over {:?} {:?}", r.key, r.parent, r.labels);
        let specs = self
            .run("prepare", move |s| {
                s.create(&r.key, &r.parent, sorted(r.labels), Kind::Active)
            })
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: mounts(specs),
        }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        log::debug!("view {:?} over {:?}", r.key, r.parent);
        let specs = self
            .run("view", move |s| {
                s.create(&r.key, &r.parent, sorted(r.labels), Kind::View)
            })
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: mounts(specs),
        }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let key = request.into_inner().key;
        let specs = self.run("mounts", move |s| s.mounts(&key)).await?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts(specs),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        log::debug!("commit {:?} as {:?}", r.key, r.name);
        self.run("commit", move |s| {
            s.commit(&r.name, &r.key, sorted(r.labels))
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let key = request.into_inner().key;
        log::debug!("remove {key:?}");
        self.run("remove", move |s| s.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let key = request.into_inner().key;
        let name = key.clone();
        let snapshot = self.run("stat", move |s| s.stat(&key)).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info(name, snapshot)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let Some(given) = r.info else {
            return Err(Status::invalid_argument("update without info"));
        };
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let name = given.name.clone();
        let snapshot = self
            .run("update", move |s| {
                s.update(&given.name, sorted(given.labels), &paths)
            })
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info(name, snapshot)),
        }))
    }

    type ListStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListSnapshotsResponse, Status>>>;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let filters = request.into_inner().filters;
        let found = self.run("list", move |s| s.list(&filters)).await?;
        // containerd's own services send infos in batches of 100.
        let mut batches = Vec::new();
        let mut infos: Vec<pb::Info> = found
            .into_iter()
            .map(|(name, snapshot)| info(name, snapshot))
            .collect();
        while !infos.is_empty() {
            let rest = infos.split_off(infos.len().min(100));
            batches.push(Ok(pb::ListSnapshotsResponse { info: infos }));
            infos = rest;
        }
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let key = request.into_inner().key;
        let usage = self.run("usage", move |s| s.usage(&key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(&self, _request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        self.run("cleanup", |s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}

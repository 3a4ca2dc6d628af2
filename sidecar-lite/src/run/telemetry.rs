//! Tracing export: the tracer provider of `[tracing]`, and the pipeline that carries finished
//! spans to an OTLP collector without ever holding a request up.
//!
//! A span that ends is offered to a bounded queue (`queue_size` spans, and at most
//! [`MAX_QUEUED_BYTES`] of them); when the queue is full the span is dropped and counted, never
//! waited for. One task takes spans off the queue and posts
//! them in batches (`batch_size`, or whatever waited `export_interval`) over OTLP/HTTP with
//! protobuf. While an export is under way nothing else is sent, so a slow or dead collector
//! fills the queue and costs spans, not requests. A batch the collector does not take within
//! `export_timeout` (retries included) is dropped and counted too.
//!
//! | metric | what |
//! | --- | --- |
//! | `sidecar_spans_exported_total` | spans the collector accepted |
//! | `sidecar_spans_dropped_total{reason="queue-full"}` | spans dropped because the queue was full |
//! | `sidecar_spans_dropped_total{reason="export-failed"}` | spans in batches that failed or timed out |
//! | `sidecar_spans_dropped_total{reason="stopped"}` | spans that ended after the export stopped |

use crate::config::TracingConfig;
use opentelemetry::{Context, InstrumentationScope, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor},
};
use resilience_core::BoxError;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::MissedTickBehavior,
};

/// The running export of `[tracing]`: a tracer for the listeners, and the task that sends
/// their spans. Stop it with [`Telemetry::shutdown`] so the last spans go out.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    export_timeout: Duration,
}

impl Telemetry {
    /// Builds the exporter and starts the export task. Must run inside a tokio runtime.
    pub(crate) fn start(config: &TracingConfig) -> Result<Self, BoxError> {
        let endpoint = config
            .endpoint()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.to_string())
            .with_timeout(config.export_timeout)
            .build()?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        exporter.set_resource(&resource);

        let (queue, spans) = mpsc::channel(config.queue_size);
        let queued = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(export_loop(
            spans,
            queued.clone(),
            exporter,
            Batching {
                size: config.batch_size.min(config.queue_size).max(1),
                interval: config.export_interval,
                timeout: config.export_timeout,
            },
            stopped,
        ));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::new(queue, queued))
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("sidecar-lite")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        tracing::info!(%endpoint, ratio = config.sampling_ratio, "exporting spans over OTLP/HTTP");
        Ok(Self {
            provider,
            tracer,
            stop,
            task,
            export_timeout: config.export_timeout,
        })
    }

    /// The tracer that the listeners start their spans with.
    #[must_use]
    pub(crate) fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Sends the spans still queued, waiting at most `export_timeout` for them, then stops.
    /// Spans that end later are dropped and counted.
    pub(crate) async fn shutdown(self) {
        let Self {
            provider,
            stop,
            mut task,
            export_timeout,
            ..
        } = self;
        let _ = stop.send(());
        if tokio::time::timeout(export_timeout, &mut task)
            .await
            .is_err()
        {
            tracing::warn!(
                ?export_timeout,
                "the last spans were not exported in time; dropping them"
            );
            task.abort();
        }
        // Our processor's shutdown does not block: the queue is simply no longer read.
        let _ = provider.shutdown();
    }
}

/// How the export task groups spans.
#[derive(Debug, Clone, Copy)]
struct Batching {
    size: usize,
    interval: Duration,
    timeout: Duration,
}

/// The most memory that finished spans may hold while they wait for export, whatever
/// `queue_size` says: spans are small (their attributes are cut to 1 KiB each), but a queue of
/// a million of them need not be.
const MAX_QUEUED_BYTES: usize = 32 << 20;

/// About what a finished span holds: its name, its attributes, events and links, and a fixed
/// part for its ids, times and status.
fn span_bytes(span: &SpanData) -> usize {
    const FIXED: usize = 256;
    let attributes: usize = span
        .attributes
        .iter()
        .map(|kv| kv.key.as_str().len() + kv.value.as_str().len() + 16)
        .sum();
    FIXED + span.name.len() + attributes + (span.events.len() + span.links.len()) * FIXED
}

/// Offers each finished span to the bounded queue of the export task; a full queue drops it.
#[derive(Debug)]
struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    /// Bytes of the spans in the queue; the export task takes off what it receives.
    queued: Arc<AtomicUsize>,
}

impl QueueProcessor {
    fn new(queue: mpsc::Sender<SpanData>, queued: Arc<AtomicUsize>) -> Self {
        Self { queue, queued }
    }
}

/// Counts spans dropped for `reason`. Registered at each drop rather than held: drops are
/// rare, and a series idle long enough to be expired by the exporter comes back with the next.
fn dropped(reason: &'static str, spans: u64) {
    metrics::counter!("sidecar_spans_dropped_total", "reason" => reason).increment(spans);
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let bytes = span_bytes(&span);
        if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            dropped("queue-full", 1);
            return;
        }
        let reason = match self.queue.try_send(span) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "queue-full",
            Err(mpsc::error::TrySendError::Closed(_)) => "stopped",
        };
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        dropped(reason, 1);
    }

    /// Does not wait: spans go out on the export task's schedule, or at
    /// [`Telemetry::shutdown`].
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Takes spans off the queue and exports them in batches until `stop`, then sends what is
/// still queued and returns.
async fn export_loop<E: SpanExporter>(
    mut spans: mpsc::Receiver<SpanData>,
    queued: Arc<AtomicUsize>,
    exporter: E,
    batching: Batching,
    mut stop: oneshot::Receiver<()>,
) {
    let mut export = Export::new(exporter, batching.timeout);
    let mut tick = tokio::time::interval(batching.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(batching.size);
    loop {
        let room = batching.size - batch.len();
        let stopping = tokio::select! {
            biased;
            _ = &mut stop => true,
            received = spans.recv_many(&mut batch, room) => {
                let taken: usize = batch[batch.len() - received..].iter().map(span_bytes).sum();
                queued.fetch_sub(taken, Ordering::AcqRel);
                if received == 0 {
                    // Every sender is gone: the provider was dropped.
                    true
                } else if batch.len() < batching.size {
                    continue;
                } else {
                    false
                }
            }
            _ = tick.tick() => false,
        };
        if stopping {
            spans.close();
            while let Some(span) = spans.recv().await {
                batch.push(span);
                if batch.len() == batching.size {
                    export.send(std::mem::take(&mut batch)).await;
                }
            }
            export.send(batch).await;
            return;
        }
        if !batch.is_empty() {
            export.send(std::mem::take(&mut batch)).await;
            tick.reset();
        }
    }
}

/// The exporter, and whether its last export failed.
struct Export<E> {
    exporter: E,
    timeout: Duration,
    failing: bool,
}

impl<E: SpanExporter> Export<E> {
    fn new(exporter: E, timeout: Duration) -> Self {
        Self {
            exporter,
            timeout,
            failing: false,
        }
    }

    async fn send(&mut self, batch: Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let outcome = match tokio::time::timeout(self.timeout, self.exporter.export(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("sidecar_spans_exported_total").increment(count);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("span export works again");
                }
            }
            Err(error) => {
                dropped("export-failed", count);
                // Once per outage at warn, so a dead collector does not flood the log.
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!(%error, spans = count, "span export failed");
                } else {
                    tracing::warn!(%error, spans = count, "span export failed; dropping spans until it works again");
                }
            }
        }
    }
}

use std::time::Duration;

use bytes::Bytes;
use devmesh_tests::{Shared, backend::pattern_byte};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const GIB: u64 = 1 << 30;

/// 1 GiB down and 1 GiB up through the remote route, streamed: the bytes
/// arrive intact and neither daemon's memory grows with the body.
#[tokio::test(flavor = "multi_thread")]
async fn one_gib_download_and_upload_stream_through_the_tunnel() {
    let Shared {
        a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("bulk", "bulk", "1.0.0").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>(
    );

    // Download.
    let req = http::Request::get(format!("http://{}/bytes/{GIB}", b.proxy))
        .header("host", "bulk.localhost")
        .body(http_body_util::Empty::new().boxed())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut offset = 0u64;
    let download = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(data) = frame.data_ref() {
                for (i, byte) in data.iter().enumerate() {
                    assert_eq!(
                        *byte,
                        pattern_byte(offset + i as u64),
                        "byte {}",
                        offset + i as u64
                    );
                }
                offset += data.len() as u64;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), download)
        .await
        .expect("download timed out");
    assert_eq!(offset, GIB);

    // Upload, generated on the fly.
    const CHUNK: u64 = 256 * 1024;
    let chunks = futures::stream::unfold(0u64, |sent| async move {
        (sent < GIB).then(|| {
            let data: Vec<u8> = (sent..sent + CHUNK).map(|i| (i % 7) as u8).collect();
            (Ok(Frame::data(Bytes::from(data))), sent + CHUNK)
        })
    });
    let req = http::Request::post(format!("http://{}/upload", b.proxy))
        .header("host", "bulk.localhost")
        .header("content-length", GIB)
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(300), client.request(req))
        .await
        .expect("upload timed out")
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // 0+1+…+6 per full cycle of 7, then the partial cycle.
    let expected_sum: u64 = GIB / 7 * 21 + (0..GIB % 7).sum::<u64>();
    assert_eq!(v["bytes"], GIB);
    assert_eq!(v["sum"], expected_sum);

    // Nothing buffered a whole body: a generous bound, far below 1 GiB
    // (the benchmark measures the real figure).
    for (name, d) in [("A", &a), ("B", &b)] {
        let rss = d.peak_rss_kib();
        assert!(
            rss > 0 && rss < 256 * 1024,
            "daemon {name} peak RSS {rss} KiB"
        );
    }
}

/// A chunked upload (no Content-Length) of chunks of awkward sizes, from
/// one byte to past yamux's 16 KiB frame, echoed back through the remote
/// route: every byte comes back in order. The consumer joins the short
/// pieces of each chunk (its size line, a short chunk, a chunk's tail) into
/// full tunnel frames; this checks that nothing is lost, repeated or moved.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_of_awkward_chunk_sizes_echoes_back_intact() {
    let Shared {
        a: _a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("chunky", "chunky", "1.0.0").await;
    let sizes = [
        1usize, 2, 7, 16383, 16384, 16385, 5, 40000, 65539, 3, 16372, 100_000,
    ];
    let mut sent = Vec::new();
    let mut chunks = Vec::new();
    for round in 0..40 {
        for (i, size) in sizes.iter().enumerate() {
            let start = sent.len();
            sent.extend((0..*size).map(|k| ((start + k) * 31 + round * 7 + i) as u8));
            chunks.push(Bytes::copy_from_slice(&sent[start..]));
        }
    }
    let body = StreamBody::new(futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c))),
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(format!("http://{}/echo", b.proxy))
        .header("host", "chunky.localhost")
        .body(body)
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(120), async {
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    })
    .await
    .expect("echo timed out");
    assert_eq!(echoed.len(), sent.len());
    let first_difference = echoed.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "echoed body differs");
}

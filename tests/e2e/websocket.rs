use devmesh_tests::Shared;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

/// A WebSocket through both hops: the server speaks first, then text and
/// binary frames echo back.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_the_tunnel() {
    let Shared {
        a,
        b,
        backend: _api,
        run: _run,
    } = Shared::start("chat", "ws-backend", "0.3.0").await;

    for proxy in [b.proxy, a.proxy] {
        let mut req = format!("ws://{proxy}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("host", "chat.localhost".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("websocket handshake");
        assert_eq!(resp.status(), 101);
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first, Message::text("welcome from ws-backend"));
        for i in 0..20u8 {
            ws.send(Message::text(format!("text {i}"))).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("text {i}"))
            );
            let bin = vec![i; 1000 * usize::from(i + 1)];
            ws.send(Message::binary(bin.clone())).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(bin));
        }
        ws.close(None).await.unwrap();
    }
}

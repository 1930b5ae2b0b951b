//! Reading a small request body whole, for the forms and JSON bodies of the console and the
//! management API: into one buffer that grows by doubling up to a limit, never a list of the
//! frames as they came (a frame of one byte can pin a whole read buffer of the connection's, so
//! a client trickling its body would cost thousands of times what it sends). Hook bodies take
//! the opening steps instead (`ingress::opening`), which also reserve their bytes in the budget.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    Unreadable(String),
}

/// The whole of `body`, if it holds at most `limit` bytes.
pub async fn read_to_limit(body: Body, limit: usize) -> Result<Bytes, BodyReadError> {
    let mut body = body;
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| BodyReadError::Unreadable(error.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        let needed = buffer.len() + data.len();
        if needed > limit {
            return Err(BodyReadError::TooLarge { limit });
        }
        if needed > buffer.capacity() {
            let capacity = (buffer.capacity() * 2).max(needed).max(1024).min(limit);
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_arriving_a_byte_at_a_time_is_read_into_one_buffer_up_to_the_limit() {
        let bytes = |count: usize| {
            let frames = (0..count).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"a")));
            Body::from_stream(futures_util::stream::iter(frames))
        };
        assert_eq!(read_to_limit(bytes(5000), 5000).await.unwrap(), Bytes::from(vec![b'a'; 5000]));
        assert!(matches!(read_to_limit(bytes(5001), 5000).await, Err(BodyReadError::TooLarge { limit: 5000 })));
    }
}

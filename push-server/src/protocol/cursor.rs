//! The SSE cursor: the `id:` of every SSE event, sent back by browsers as
//! `Last-Event-ID`. It holds the position of every channel of the stream,
//! in the order of the stream's `channels=` list, separated by `,`:
//! `1732800000000-0` for one channel, `1732800000000-0,1732800000042-3` for
//! two. Ids are cluster-wide, so a cursor works on any node.

use super::message::MessageId;

/// A cursor that does not fit the stream's channels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID must hold one <ms>-<seq> id per channel of the stream, separated by commas")]
pub struct CursorError;

/// Parses a cursor for a stream of `channels` channels.
pub fn parse(s: &str, channels: usize) -> Result<Vec<MessageId>, CursorError> {
    let ids: Result<Vec<MessageId>, _> = s
        .trim()
        .split(',')
        .map(|p| p.parse::<MessageId>())
        .collect();
    match ids {
        Ok(ids) if ids.len() == channels => Ok(ids),
        _ => Err(CursorError),
    }
}

/// Writes the cursor of `positions` into `out`.
pub fn write(positions: &[MessageId], out: &mut Vec<u8>) {
    use std::io::Write;
    for (i, id) in positions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{}-{}", id.ms, id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = vec![MessageId::new(1, 2), MessageId::new(30, 0)];
        let mut s = Vec::new();
        write(&p, &mut s);
        assert_eq!(s, b"1-2,30-0");
        assert_eq!(parse("1-2,30-0", 2), Ok(p));
        assert_eq!(parse("1-2", 1), Ok(vec![MessageId::new(1, 2)]));
        for bad in ["", "1-2", "1-2,3", "1-2,,3-4", "x", "1-2,3-4,5-6"] {
            assert_eq!(parse(bad, 2), Err(CursorError), "{bad:?}");
        }
    }
}

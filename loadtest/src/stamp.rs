//! Identifying each sent Opus packet: the send time rides in Opus padding.
//!
//! A forwarding server passes the publisher's Opus payload through unchanged but rewrites SSRC, sequence
//! number and timestamp, so nothing in the RTP header links a received packet to the one that was sent.
//! The load tester is both sender and receiver in one process with one monotonic clock, so it writes the
//! send time into the payload itself: every frame is encoded once, as a code-0 Opus packet (one frame),
//! and on each send it is re-framed as a code-3 packet (RFC 6716 §3.2.5) holding the same single frame
//! plus padding that carries a magic tag, the sender's index and the send time in nanoseconds since the
//! run's epoch. Decoders ignore Opus padding, so the audio is unchanged and the packet stays valid Opus;
//! the receiver reads the stamp back from the payload's tail.

/// Bytes of padding the stamp occupies.
pub const STAMP_LEN: usize = 14;
const MAGIC: [u8; 2] = *b"CL";

/// A decoded stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sending participant's index in the run.
    pub sender: u32,
    /// Send time, nanoseconds since the run's epoch.
    pub sent_ns: u64,
}

/// Whether `opus` is a code-0 packet (one frame, no framing bytes), the form [`stamp_into`] accepts.
pub fn is_code0(opus: &[u8]) -> bool {
    !opus.is_empty() && opus[0] & 0x03 == 0
}

/// Write `frame` (a code-0 Opus packet) re-framed as code 3 with the stamp as padding into `out`.
pub fn stamp_into(frame: &[u8], stamp: Stamp, out: &mut Vec<u8>) {
    debug_assert!(is_code0(frame));
    out.clear();
    out.push(frame[0] | 0x03);
    // Frame count byte: v = 0 (CBR), p = 1 (padding follows), M = 1 frame.
    out.push(0x41);
    out.push(STAMP_LEN as u8);
    out.extend_from_slice(&frame[1..]);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stamp.sender.to_be_bytes());
    out.extend_from_slice(&stamp.sent_ns.to_be_bytes());
}

/// Read a stamp written by [`stamp_into`], if `payload` carries one.
pub fn read(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < 3 + STAMP_LEN
        || payload[0] & 0x03 != 0x03
        || payload[1] != 0x41
        || payload[2] as usize != STAMP_LEN
    {
        return None;
    }
    let tail = &payload[payload.len() - STAMP_LEN..];
    if tail[..2] != MAGIC {
        return None;
    }
    let sender = u32::from_be_bytes(tail[2..6].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(tail[6..14].try_into().ok()?);
    Some(Stamp { sender, sent_ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::audio::{ToneGenerator, FRAME_SAMPLES, SAMPLE_RATE};

    #[test]
    fn a_stamped_packet_decodes_to_the_same_audio_and_gives_its_stamp_back() {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("encoder");
        let mut tone = ToneGenerator::new(440.0, 0.3, SAMPLE_RATE);
        let mut pcm = vec![0f32; FRAME_SAMPLES];
        let mut buf = vec![0u8; 1500];
        let mut plain_dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut stamped_dec =
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut a = vec![0f32; FRAME_SAMPLES];
        let mut b = vec![0f32; FRAME_SAMPLES];
        let mut out = Vec::new();
        for i in 0..20u64 {
            tone.fill(&mut pcm);
            let n = enc.encode_float(&pcm, &mut buf).expect("encode");
            let frame = &buf[..n];
            assert!(
                is_code0(frame),
                "libopus emits code-0 packets for 20 ms mono"
            );
            let st = Stamp {
                sender: 7,
                sent_ns: 1_000_000_007 * i,
            };
            stamp_into(frame, st, &mut out);
            assert_eq!(read(&out), Some(st));
            assert_eq!(read(frame), None);
            let na = plain_dec
                .decode_float(frame, &mut a, false)
                .expect("plain decodes");
            let nb = stamped_dec
                .decode_float(&out, &mut b, false)
                .expect("stamped decodes");
            assert_eq!(na, nb);
            assert_eq!(a, b, "padding does not change the audio");
        }
    }
}

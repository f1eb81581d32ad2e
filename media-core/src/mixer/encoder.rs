//! The mixer's Opus encoder: libopus through its C API, because the mixer needs one thing the `opus` crate
//! cannot do — **copy an encoder's whole state**.
//!
//! When a listener starts talking it moves from the room's shared encode to a personal mix-minus encoder. A
//! fresh encoder's first packets do not continue the stream the listener's decoder has been decoding (other
//! overlap, prediction, gain and mode state), which is heard as a click. Starting the personal encoder as an
//! exact copy of the shared one makes the switch a change of input only: the decoder sees one continuous
//! stream. libopus documents its encoder state as "position independent and can be freely copied"
//! (`opus.h`, `OpusEncoder`), so a byte copy of `opus_encoder_get_size` bytes is a complete clone.
//!
//! The workspace denies `unsafe` code; this module is allowed it because the C API (opusic-sys) is the only
//! way to that copy. Every block states why it is sound.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use opusic_sys as ffi;

use crate::audio::{opus_fec_loss_percent, SAMPLE_RATE};

/// A libopus call failed with this error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("libopus {call} failed with code {code}")]
pub struct OpusError {
    pub call: &'static str,
    pub code: i32,
}

fn check(call: &'static str, code: i32) -> Result<i32, OpusError> {
    if code < 0 {
        Err(OpusError { call, code })
    } else {
        Ok(code)
    }
}

/// The packet loss (percent) a mix encoder expects until its listeners' receiver reports say otherwise
/// (with the room's in-band FEC on): a listener's first seconds are protected as every listener's were
/// before the reports were followed.
pub const UNREPORTED_LOSS_PERCENT: u8 = 10;

/// Encoder settings of one mixed room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    pub complexity: u8,
    pub fec: bool,
    /// 1 (mono) or 2 (stereo: interleaved input, for a spatial room's mixes). A stereo encoder is
    /// CELT-only (libopus' restricted-low-delay application): SILK codes stereo as a mid signal plus one
    /// predicted side for the whole band, which pulls every voice of a mix toward one common position
    /// (measured: three voices at pans −0.63, −0.51, −0.50 all came out 9.2 dB left-heavy), while CELT
    /// keeps each band's own balance. CELT has no in-band FEC: a spatial listener's loss protection is RED.
    pub channels: u8,
}

/// A mono or stereo 48 kHz VoIP Opus encoder that can be cloned.
pub struct MixEncoder {
    state: NonNull<ffi::OpusEncoder>,
    channels: i32,
    /// The room's settings have in-band FEC on.
    fec: bool,
    /// The packet loss (percent) the encoder was last told to expect.
    expected_loss: u8,
}

// libopus: "A single codec state may only be accessed from a single thread at a time"; `MixEncoder` is only
// used through `&mut self`, and moving a state between threads is allowed.
unsafe impl Send for MixEncoder {}

impl MixEncoder {
    pub fn new(settings: EncoderSettings) -> Result<MixEncoder, OpusError> {
        let mut error = 0;
        let channels = i32::from(settings.channels);
        // SAFETY: plain constructor call (libopus refuses a channel count other than 1 or 2 with an error
        // code); the result is checked for null and the error code.
        let state = unsafe {
            ffi::opus_encoder_create(
                SAMPLE_RATE as i32,
                channels,
                if channels == 2 {
                    ffi::OPUS_APPLICATION_RESTRICTED_LOWDELAY
                } else {
                    ffi::OPUS_APPLICATION_VOIP
                },
                &mut error,
            )
        };
        check("opus_encoder_create", error)?;
        let state = NonNull::new(state).ok_or(OpusError {
            call: "opus_encoder_create",
            code: ffi::OPUS_ALLOC_FAIL,
        })?;
        let expected_loss = if settings.fec {
            UNREPORTED_LOSS_PERCENT
        } else {
            0
        };
        let mut encoder = MixEncoder {
            state,
            channels,
            fec: settings.fec,
            expected_loss,
        };
        let bitrate = i32::try_from(settings.bitrate_bps).unwrap_or(i32::MAX);
        encoder.ctl("OPUS_SET_BITRATE", ffi::OPUS_SET_BITRATE_REQUEST, bitrate)?;
        encoder.ctl(
            "OPUS_SET_COMPLEXITY",
            ffi::OPUS_SET_COMPLEXITY_REQUEST,
            i32::from(settings.complexity),
        )?;
        encoder.ctl(
            "OPUS_SET_INBAND_FEC",
            ffi::OPUS_SET_INBAND_FEC_REQUEST,
            i32::from(settings.fec),
        )?;
        encoder.ctl(
            "OPUS_SET_PACKET_LOSS_PERC",
            ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST,
            i32::from(opus_fec_loss_percent(expected_loss)),
        )?;
        // Silence is the mixer's business (it sends nothing), never libopus' voice detector's.
        encoder.ctl("OPUS_SET_DTX", ffi::OPUS_SET_DTX_REQUEST, 0)?;
        Ok(encoder)
    }

    fn ctl(&mut self, call: &'static str, request: i32, value: i32) -> Result<(), OpusError> {
        // SAFETY: `state` is a live encoder; every request used here takes one `opus_int32` argument.
        check(call, unsafe {
            ffi::opus_encoder_ctl(self.state.as_ptr(), request, value)
        })
        .map(drop)
    }

    /// Change the encoder's libopus complexity (0..=10) from the next frame on; its state carries on.
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), OpusError> {
        self.ctl(
            "OPUS_SET_COMPLEXITY",
            ffi::OPUS_SET_COMPLEXITY_REQUEST,
            i32::from(complexity),
        )
    }

    /// The encoder's libopus complexity (tests).
    #[cfg(test)]
    pub(crate) fn complexity(&self) -> i32 {
        let mut value: i32 = -1;
        // SAFETY: `state` is a live encoder; OPUS_GET_COMPLEXITY writes one `opus_int32` through the pointer.
        let code = unsafe {
            ffi::opus_encoder_ctl(
                self.state.as_ptr(),
                ffi::OPUS_GET_COMPLEXITY_REQUEST,
                &mut value as *mut i32,
            )
        };
        check("OPUS_GET_COMPLEXITY", code).expect("a live encoder reports its complexity");
        value
    }

    /// Tell the encoder the packet loss (percent, at most 100) its listeners report: in-band FEC is coded
    /// for it (libopus is told at least [`OPUS_FEC_MIN_LOSS_PERCENT`](crate::audio::OPUS_FEC_MIN_LOSS_PERCENT),
    /// so that any loss gets FEC whatever the bitrate and the encoder's history), none at 0. Nothing to
    /// do when the figure is unchanged or the room has FEC off.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), OpusError> {
        let percent = percent.min(100);
        if !self.fec || percent == self.expected_loss {
            return Ok(());
        }
        self.ctl(
            "OPUS_SET_PACKET_LOSS_PERC",
            ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST,
            i32::from(opus_fec_loss_percent(percent)),
        )?;
        self.expected_loss = percent;
        Ok(())
    }

    /// Encode one frame of `pcm` (2.5 to 60 ms of samples, interleaved when stereo) into `out`; returns
    /// the packet length.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, OpusError> {
        let frame = i32::try_from(pcm.len()).unwrap_or(i32::MAX) / self.channels;
        let max = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: `pcm` holds `frame` samples per channel and `out` has room for `max` bytes; libopus
        // checks the frame size and never writes past `max`.
        let n = unsafe {
            ffi::opus_encode_float(
                self.state.as_ptr(),
                pcm.as_ptr(),
                frame,
                out.as_mut_ptr(),
                max,
            )
        };
        check("opus_encode_float", n).map(|n| n as usize)
    }

    /// An independent encoder whose state is an exact copy of this one's: fed the same input, both produce
    /// the same packets.
    pub fn try_clone(&self) -> Result<MixEncoder, OpusError> {
        // SAFETY: size query with the channel count the encoder was created with (valid, or creation
        // would have failed).
        let size = unsafe { ffi::opus_encoder_get_size(self.channels) };
        let size = usize::try_from(check("opus_encoder_get_size", size)?).unwrap_or(0);
        // Allocated with `malloc` because `opus_encoder_destroy` frees with libopus' allocator, which is
        // `free` in the bundled build.
        // SAFETY: `malloc` of a non-zero size; checked for null below.
        let copy = unsafe { libc::malloc(size) }.cast::<ffi::OpusEncoder>();
        let copy = NonNull::new(copy).ok_or(OpusError {
            call: "malloc",
            code: ffi::OPUS_ALLOC_FAIL,
        })?;
        // SAFETY: both regions are `size` bytes (the size of an encoder state of this channel count, which
        // `self.state` is),
        // distinct allocations, and the state is position independent (opus.h).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.state.as_ptr().cast::<u8>(),
                copy.as_ptr().cast::<u8>(),
                size,
            );
        }
        Ok(MixEncoder {
            state: copy,
            channels: self.channels,
            fec: self.fec,
            expected_loss: self.expected_loss,
        })
    }
}

impl Drop for MixEncoder {
    fn drop(&mut self) {
        // SAFETY: `state` came from `opus_encoder_create` or a `malloc`'d copy of one, and is freed once.
        unsafe { ffi::opus_encoder_destroy(self.state.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::FRAME_SAMPLES;
    use crate::testkit::analysis::{ToneGenerator, VoiceBuzz};

    fn settings() -> EncoderSettings {
        EncoderSettings {
            bitrate_bps: 32_000,
            complexity: 5,
            fec: true,
            channels: 1,
        }
    }

    #[test]
    fn a_clone_continues_exactly_like_the_original() {
        let mut a = MixEncoder::new(settings()).expect("libopus creates a mono encoder");
        let mut tone = ToneGenerator::new(440.0, 0.3, SAMPLE_RATE);
        let mut pcm = vec![0.0; FRAME_SAMPLES];
        let mut out_a = [0u8; 1500];
        let mut out_b = [0u8; 1500];
        for _ in 0..25 {
            tone.fill(&mut pcm);
            a.encode(&pcm, &mut out_a).expect("a 20 ms frame encodes");
        }
        let mut b = a.try_clone().expect("the state copies");
        for frame in 0..50 {
            tone.fill(&mut pcm);
            let na = a.encode(&pcm, &mut out_a).expect("a 20 ms frame encodes");
            let nb = b.encode(&pcm, &mut out_b).expect("a 20 ms frame encodes");
            assert_eq!(out_a[..na], out_b[..nb], "frame {frame} differs");
        }
        drop(a);
        // The clone owns its state: it still works after the original is gone.
        tone.fill(&mut pcm);
        assert!(b.encode(&pcm, &mut out_b).expect("encodes") > 0);
    }

    /// How many of `frames` frames of the buzz come out with in-band FEC.
    fn fec_frames(e: &mut MixEncoder, voice: &mut VoiceBuzz, frames: usize) -> usize {
        let mut pcm = vec![0.0; FRAME_SAMPLES];
        let mut out = [0u8; 1500];
        (0..frames)
            .filter(|_| {
                voice.fill(&mut pcm);
                let n = e.encode(&pcm, &mut out).expect("a 20 ms frame encodes");
                crate::mixer::opus_packet_has_fec(&out[..n])
            })
            .count()
    }

    /// libopus' own rule (at 5 % or less, FEC only if the bitrate has room, with a hysteresis) left a
    /// 24 kb/s encoder that had been clean without FEC for a listener starting to lose 3 %, while one
    /// that started at 10 % kept it: whatever came before, any stated loss gets FEC.
    #[test]
    fn any_stated_loss_gets_fec_whatever_the_bitrate_and_history() {
        for bitrate_bps in [24_000, 32_000, 48_000] {
            let mut e = MixEncoder::new(EncoderSettings {
                bitrate_bps,
                ..settings()
            })
            .expect("libopus creates a mono encoder");
            let mut voice = VoiceBuzz::new(SAMPLE_RATE);
            // The voice detector's first second, coded for 10 % (before any report).
            fec_frames(&mut e, &mut voice, 50);
            let early = fec_frames(&mut e, &mut voice, 50);
            // Its quieter half-syllables are not coded with FEC (libopus: too little speech activity).
            assert!(
                early >= 25,
                "{bitrate_bps} b/s, 10 % before reports: {early} of 50"
            );
            e.set_expected_loss(0).expect("a valid figure");
            // The first packet may still carry the FEC of the frame before.
            let clean = fec_frames(&mut e, &mut voice, 50);
            assert!(
                clean <= 1,
                "{bitrate_bps} b/s, clean: {clean} of 50 with FEC"
            );
            for percent in [1, 3, 5] {
                e.set_expected_loss(percent).expect("a valid figure");
                let with_fec = fec_frames(&mut e, &mut voice, 50);
                // Without the floor: none at 24 and 32 kb/s.
                assert!(
                    with_fec + 3 >= early,
                    "{bitrate_bps} b/s, {percent} % after none: {with_fec} of 50 with FEC, {early} at 10 %"
                );
                e.set_expected_loss(0).expect("a valid figure");
                fec_frames(&mut e, &mut voice, 5);
            }
        }
    }

    #[test]
    fn a_bad_frame_size_is_an_error_not_a_crash() {
        let mut e = MixEncoder::new(settings()).expect("libopus creates a mono encoder");
        let mut out = [0u8; 1500];
        let err = e.encode(&[0.0; 100], &mut out).unwrap_err();
        assert_eq!(err.call, "opus_encode_float");
    }
}

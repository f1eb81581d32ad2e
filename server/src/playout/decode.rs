//! One playlist item as Opus packets: Ogg/Opus passed through as it is (the Icecast ingest's Ogg reader,
//! packets with their pages' granule positions for the pacer), WAV and MP3 decoded by symphonia, mixed
//! down to mono, resampled to 48 kHz by rubato and encoded to 20 ms Opus packets by the playback's one
//! encoder. Everything is pulled a packet at a time, so a long file costs no more memory than its bytes.

use std::collections::VecDeque;
use std::io::Cursor;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use vocab::{FRAME_SAMPLES, SAMPLE_RATE};

use super::media::Format;
use crate::broadcast::ogg_reader::{OggError, OggItem, OggReader};

/// Undecodable frames in a row after which a file is given up (an MP3 with a few bad frames plays on).
const MAX_BAD_FRAMES: u32 = 50;
/// Input frames per resampler call.
const RESAMPLE_CHUNK: usize = 1024;
/// Largest Opus packet the encoder writes.
const MAX_OPUS: usize = 1500;

/// Why an item stops (or cannot start) playing.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error(transparent)]
    Ogg(#[from] OggError),
    #[error("the Ogg stream has no Opus headers")]
    NoHeaders,
    #[error("cannot decode the file: {0}")]
    Decode(String),
    #[error("no audio track in the file")]
    NoTrack,
    #[error("unsupported sample rate {0} Hz")]
    SampleRate(u32),
    #[error("the Opus encoder failed: {0}")]
    Encode(String),
}

impl ItemError {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ItemError::Ogg(e) => e.as_str(),
            ItemError::NoHeaders => "not_opus",
            ItemError::Decode(_) | ItemError::NoTrack => "undecodable",
            ItemError::SampleRate(_) => "unsupported",
            ItemError::Encode(_) => "encode",
        }
    }
}

/// One Opus packet of an item: `samples` long; `granule` and `last` as the pacer takes them (a
/// pass-through page's granule position, or none: the packet follows the one before).
#[derive(Debug)]
pub struct ItemPacket {
    pub payload: Vec<u8>,
    pub samples: u32,
    pub granule: Option<u64>,
    pub last: bool,
}

/// An item being played.
pub enum Item {
    Ogg(OggReader),
    Pcm(Box<PcmItem>),
}

impl Item {
    /// Starts an item from its file's bytes. An Ogg file must begin with valid Opus headers; a WAV or MP3
    /// file must have an audio track at a usable sample rate.
    pub fn open(bytes: Vec<u8>, format: Format) -> Result<Item, ItemError> {
        match format {
            Format::Ogg => {
                let mut reader = OggReader::default();
                reader.push(&bytes);
                loop {
                    match reader.next_item() {
                        Some(Ok(OggItem::Headers { .. })) => return Ok(Item::Ogg(reader)),
                        Some(Ok(OggItem::Audio { .. })) => continue,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(ItemError::NoHeaders),
                    }
                }
            }
            Format::Wav | Format::Mp3 | Format::M3u => {
                Ok(Item::Pcm(Box::new(PcmItem::open(bytes, format)?)))
            }
        }
    }

    /// The next packet; `None` at the end of the item.
    pub fn next(&mut self, encoder: &mut opus::Encoder) -> Option<Result<ItemPacket, ItemError>> {
        match self {
            Item::Ogg(reader) => loop {
                return match reader.next_item() {
                    Some(Ok(OggItem::Audio {
                        packet,
                        granule,
                        last,
                    })) => {
                        let Some((samples, _)) = media_core::mixer::opus_packet_info(&packet)
                        else {
                            return Some(Err(OggError::BadPacket.into()));
                        };
                        Some(Ok(ItemPacket {
                            payload: packet,
                            samples,
                            granule,
                            last,
                        }))
                    }
                    // A chained file's next link: the timeline goes on.
                    Some(Ok(OggItem::Headers { .. })) => continue,
                    Some(Err(e)) => Some(Err(e.into())),
                    None => reader.finish().err().map(|e| Err(e.into())),
                };
            },
            Item::Pcm(pcm) => pcm.next(encoder),
        }
    }
}

/// A WAV or MP3 file decoded as it plays.
pub struct PcmItem {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    resampler: Option<FftFixedIn<f32>>,
    /// Mono samples at the file's rate, waiting for a full resampler chunk.
    pending: Vec<f32>,
    /// Mono samples at 48 kHz, waiting to be encoded.
    out: VecDeque<f32>,
    /// Resampler delay still to drop from the start of `out`.
    delay: usize,
    /// The file's sample rate, the mono samples decoded and the 48 kHz samples made of them: the
    /// resampler's flush pads, and what it adds beyond the file's duration is cut.
    rate: u32,
    decoded: u64,
    resampled: u64,
    ended: bool,
    frame: Vec<f32>,
    encoded: Vec<u8>,
}

impl PcmItem {
    fn open(bytes: Vec<u8>, format: Format) -> Result<PcmItem, ItemError> {
        let decode = |e: SymphoniaError| ItemError::Decode(e.to_string());
        let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
        let mut hint = Hint::new();
        hint.with_extension(if format == Format::Mp3 { "mp3" } else { "wav" });
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                stream,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(decode)?;
        let reader = probed.format;
        let track = reader
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or(ItemError::NoTrack)?;
        let rate = track.codec_params.sample_rate.ok_or(ItemError::NoTrack)?;
        if !(8_000..=192_000).contains(&rate) {
            return Err(ItemError::SampleRate(rate));
        }
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(decode)?;
        let resampler = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(rate as usize, SAMPLE_RATE as usize, RESAMPLE_CHUNK, 2, 1)
                    .map_err(|_| ItemError::SampleRate(rate))?,
            )
        };
        let delay = resampler.as_ref().map_or(0, |r| r.output_delay());
        Ok(PcmItem {
            track: track.id,
            format: reader,
            decoder,
            resampler,
            pending: Vec::new(),
            out: VecDeque::new(),
            delay,
            rate,
            decoded: 0,
            resampled: 0,
            ended: false,
            frame: vec![0.0; FRAME_SAMPLES],
            encoded: vec![0; MAX_OPUS],
        })
    }

    fn next(&mut self, encoder: &mut opus::Encoder) -> Option<Result<ItemPacket, ItemError>> {
        while self.out.len() < FRAME_SAMPLES && !self.ended {
            if let Err(e) = self.decode_more() {
                return Some(Err(e));
            }
        }
        if self.out.is_empty() {
            return None;
        }
        // The last frame is padded with silence.
        for s in self.frame.iter_mut() {
            *s = self.out.pop_front().unwrap_or(0.0);
        }
        match encoder.encode_float(&self.frame, &mut self.encoded) {
            Ok(n) => Some(Ok(ItemPacket {
                payload: self.encoded[..n].to_vec(),
                samples: FRAME_SAMPLES as u32,
                granule: None,
                last: true,
            })),
            Err(e) => Some(Err(ItemError::Encode(e.to_string()))),
        }
    }

    /// Decodes the next packet of the file (or ends it) into `out`.
    fn decode_more(&mut self) -> Result<(), ItemError> {
        let mut bad = 0;
        let decoded = loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                // The end of the file (a truncated one ends here too, after what could be read).
                Err(SymphoniaError::IoError(_)) | Err(SymphoniaError::ResetRequired) => {
                    self.ended = true;
                    return self.flush();
                }
                Err(e) => return Err(ItemError::Decode(e.to_string())),
            };
            if packet.track_id() != self.track {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buffer) => break buffer,
                Err(SymphoniaError::DecodeError(why)) => {
                    bad += 1;
                    if bad >= MAX_BAD_FRAMES {
                        return Err(ItemError::Decode(why.to_owned()));
                    }
                }
                Err(e) => return Err(ItemError::Decode(e.to_string())),
            }
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count().max(1);
        let mut samples = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        samples.copy_interleaved_ref(decoded);
        let mono = samples
            .samples()
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / channels as f32);
        self.decoded += (samples.samples().len() / channels) as u64;
        match self.resampler.as_mut() {
            None => self.out.extend(mono),
            Some(resampler) => {
                self.pending.extend(mono);
                while self.pending.len() >= resampler.input_frames_next() {
                    let n = resampler.input_frames_next();
                    let chunk: Vec<f32> = self.pending.drain(..n).collect();
                    let out = resampler
                        .process(&[chunk], None)
                        .map_err(|e| ItemError::Decode(e.to_string()))?;
                    self.resampled += push_after_delay(&mut self.out, &mut self.delay, &out[0]);
                }
            }
        }
        Ok(())
    }

    /// At the end of the file: what the resampler still holds.
    fn flush(&mut self) -> Result<(), ItemError> {
        let Some(resampler) = self.resampler.as_mut() else {
            return Ok(());
        };
        // The rest, padded with silence to a chunk, then one chunk of silence for the filter's delay.
        let mut rest = std::mem::take(&mut self.pending);
        for _ in 0..2 {
            rest.resize(resampler.input_frames_next(), 0.0);
            let out = resampler
                .process(&[std::mem::take(&mut rest)], None)
                .map_err(|e| ItemError::Decode(e.to_string()))?;
            self.resampled += push_after_delay(&mut self.out, &mut self.delay, &out[0]);
        }
        // The flush's padding beyond the file's own duration.
        let expected = self.decoded * u64::from(SAMPLE_RATE) / u64::from(self.rate);
        let excess = self.resampled.saturating_sub(expected) as usize;
        self.out.truncate(self.out.len().saturating_sub(excess));
        Ok(())
    }
}

/// Appends `samples` to `out`, first dropping what is left of the resampler's `delay`; returns how many
/// were appended.
fn push_after_delay(out: &mut VecDeque<f32>, delay: &mut usize, samples: &[f32]) -> u64 {
    let skip = (*delay).min(samples.len());
    *delay -= skip;
    out.extend(&samples[skip..]);
    (samples.len() - skip) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mono 16-bit WAV file of `samples` at `rate`.
    pub(crate) fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
        let data = samples.len() as u32 * 2;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * 2).to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data.to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    fn encoder() -> opus::Encoder {
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
            .expect("a mono 48 kHz encoder")
    }

    fn packets(item: &mut Item) -> Result<Vec<ItemPacket>, ItemError> {
        let mut enc = encoder();
        let mut out = Vec::new();
        while let Some(p) = item.next(&mut enc) {
            out.push(p?);
        }
        Ok(out)
    }

    #[test]
    fn a_wav_at_another_rate_becomes_20_ms_packets_of_the_same_duration() {
        // One second at 22,050 Hz (espeak-ng's rate): 50 packets of 20 ms, the last padded.
        let tone: Vec<i16> = (0..22_050)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let mut item = Item::open(wav(22_050, &tone), Format::Wav).expect("a valid WAV");
        let out = packets(&mut item).expect("decodes");
        assert!((50..=51).contains(&out.len()), "{} packets", out.len());
        assert!(out
            .iter()
            .all(|p| p.samples == 960 && p.last && p.granule.is_none()));
    }

    #[test]
    fn garbage_and_truncated_files_are_typed_errors() {
        assert!(Item::open(b"not audio at all".to_vec(), Format::Wav).is_err());
        assert!(Item::open(vec![0xff; 5000], Format::Mp3).is_err());
        assert!(matches!(
            Item::open(b"OggS garbage".to_vec(), Format::Ogg),
            Err(ItemError::Ogg(_)) | Err(ItemError::NoHeaders)
        ));
        // A WAV cut in the middle plays what it has.
        let tone = vec![1000i16; 48_000];
        let mut bytes = wav(48_000, &tone);
        bytes.truncate(bytes.len() / 2);
        let mut item = Item::open(bytes, Format::Wav).expect("its header is whole");
        let out = packets(&mut item).expect("plays what it has");
        assert!((20..=26).contains(&out.len()), "{} packets", out.len());
    }
}

use super::tests::t0;
use super::*;
use crate::audio::SAMPLE_RATE;
use crate::red::RedundantFrame;

fn opus_frames(count: usize) -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
        .expect("an Opus encoder");
    (0..count)
        .map(|i| {
            let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                .map(|n| 0.3 * ((i * FRAME_SAMPLES + n) as f32 * 0.05).sin())
                .collect();
            enc.encode_vec_float(&pcm, MAX_OPUS).expect("encodes")
        })
        .collect()
}

#[test]
fn contiguous_redundancy_fills_gaps_and_the_rest_is_ignored() {
    let now = t0();
    let mut mixer = Mixer::new(now, MixSettings::default());
    let (talker, ssrc) = (ParticipantId(1), Ssrc(11));
    mixer.add_member(talker, true, true, 0, 0);
    let frames = opus_frames(6);
    let mut stats = MixStats::default();
    let ts = |i: u64| (i * 960) as u32;
    for i in [0u64, 1] {
        mixer
            .push(
                now,
                talker,
                ssrc,
                i,
                ts(i),
                Arc::from(frames[i as usize].as_slice()),
                Some(30),
                &mut stats,
            )
            .expect("Opus");
    }
    // 2 and 3 are lost; 4 carries 2 and 3 (oldest first) and 1 (already there).
    mixer
        .push(
            now,
            talker,
            ssrc,
            4,
            ts(4),
            Arc::from(frames[4].as_slice()),
            Some(30),
            &mut stats,
        )
        .expect("Opus");
    let red: Vec<RedundantFrame<'_>> = [1usize, 2, 3]
        .iter()
        .map(|&i| RedundantFrame {
            ts_offset: ts(4) - ts(i as u64),
            payload: &frames[i],
        })
        .collect();
    let held = |mixer: &Mixer| mixer.members[0].jitter.len();
    assert_eq!(held(&mixer), 3);
    mixer.push_redundant(talker, 4, ts(4), &red);
    assert_eq!(held(&mixer), 5, "2 and 3 fill the gap; 1 is there already");
    assert_eq!((stats.packets_duplicate, stats.packets_late), (0, 0));
    // A gap between the redundant frames (a DTX pause, an unusual distance pattern) leaves their
    // sequence numbers unknown: nothing is recovered past it.
    let gapped = [RedundantFrame {
        ts_offset: 3 * 960,
        payload: &frames[5],
    }];
    mixer.push_redundant(talker, 9, ts(9), &gapped);
    assert_eq!(held(&mixer), 5);
    // Not Opus: ignored.
    mixer.push_redundant(
        talker,
        6,
        ts(6),
        &[RedundantFrame {
            ts_offset: 960,
            payload: &[],
        }],
    );
    assert_eq!(held(&mixer), 5);
    // Played over the next ticks, they count as recovered from RED, not as FEC.
    let (mut out, mut samples) = (Vec::new(), Samples::default());
    for tick in 0..12 {
        mixer.tick(
            now + FRAME_DURATION * tick,
            &mut out,
            &mut stats,
            &mut samples,
        );
    }
    assert_eq!(stats.recovered_red, 2, "{stats:?}");
    assert_eq!(stats.concealed_fec, 0, "{stats:?}");
}

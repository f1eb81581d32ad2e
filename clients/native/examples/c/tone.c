/*
 * Chorus native SDK, C example: join a room, send a tone, report which tones the others send.
 *
 *   tone [--ptt] [--team] [--whisper <identity>] [--stereo] <ws-url> <token> <room> <tone-hz> <seconds>
 *        <candidate-hz>...
 *
 * It connects, waits for media, then for <seconds> acts as a game's audio callbacks would every 10 ms:
 * pushes the <tone-hz> sine (24 kHz, 16-bit) and pulls the mix (48 kHz, float). Then it analyses the
 * second half of the mix for the candidate tones and prints one line per candidate heard:
 *
 *   heard <hz> <fraction of the energy>
 *
 * and finally "participants <n>" (the others it was told about), leaves and frees the client. Exit status:
 * 0, or 1 with the SDK's error message on stderr.
 *
 * With --ptt it talks by push-to-talk: the key is up for the first half of <seconds> (nothing of it is sent
 * or forwarded) and held down for the second half, as a game would from its key handler.
 *
 * With --team it talks to its team only (the token's `team` claim) from the start. With --whisper it
 * whispers to the participant whose identity is <identity> (its sid from the PARTICIPANT_JOINED events)
 * for the second half of <seconds>; together, team talk for the first half and the whisper for the second.
 * It prints "talk team", "whisper <identity> <sid> at <s>", and the server's refusals as
 * "event error <code> <message>".
 *
 * With --stereo it asks for stereo output (output_channels 2): the mix comes interleaved L/R; it analyses
 * the average of the two sides and prints "stereo left <mean square> right <mean square>" for the second
 * half (the same on both sides in a room without positions; the server's panning in a spatial one).
 *
 * Events arrive through an event callback (chorus_client_set_event_callback) on the SDK's own thread, so
 * what they tell is kept under a mutex that the game thread takes to read it.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chorus.h"

#define IN_RATE 24000
#define OUT_RATE 48000
#define BLOCK (OUT_RATE / 10) /* 100 ms analysis blocks */
#define PI 3.14159265358979323846

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

#define MAX_ROSTER 16

/* What the events told us: the others that joined (and who they are), the connection state. Written by
 * the event callback (the SDK's thread), read by the game thread: both under `lock`. */
typedef struct {
  pthread_mutex_t lock;
  int participants;
  ChorusConnectionState state;
  char identities[MAX_ROSTER][128];
  char sids[MAX_ROSTER][64];
} Session;

/* Copy the sid of the participant `identity` into `out`; false if it has not joined (yet). */
static bool sid_of(Session *s, const char *identity, char out[64]) {
  bool found = false;
  pthread_mutex_lock(&s->lock);
  int known = s->participants < MAX_ROSTER ? s->participants : MAX_ROSTER;
  for (int i = 0; i < known && !found; i++) {
    if (strcmp(s->identities[i], identity) == 0) {
      snprintf(out, 64, "%s", s->sids[i]);
      found = true;
    }
  }
  pthread_mutex_unlock(&s->lock);
  return found;
}

static ChorusConnectionState state_of(Session *s) {
  pthread_mutex_lock(&s->lock);
  ChorusConnectionState state = s->state;
  pthread_mutex_unlock(&s->lock);
  return state;
}

static int fail(const char *what, ChorusError code) {
  fprintf(stderr, "%s failed (%d): %s\n", what, (int)code, chorus_last_error_message());
  return 1;
}

/* The event callback, on the SDK's thread: print an event; note the others that joined and the states.
 * It returns at once (a game would not block here either). */
static void on_event(const ChorusEvent *e, void *user) {
  Session *s = user;
  pthread_mutex_lock(&s->lock);
  switch (e->kind) {
  case CHORUS_EVENT_KIND_CONNECTION_STATE:
    s->state = e->state;
    printf("event state %d\n", (int)e->state);
    break;
  case CHORUS_EVENT_KIND_JOINED:
    printf("event joined %s room %s slots %u\n", e->sid, e->name, e->slot);
    break;
  case CHORUS_EVENT_KIND_PARTICIPANT_JOINED:
    if (s->participants < MAX_ROSTER) {
      snprintf(s->identities[s->participants], sizeof s->identities[0], "%s", e->identity);
      snprintf(s->sids[s->participants], sizeof s->sids[0], "%s", e->sid);
    }
    s->participants++;
    printf("event participant_joined %s (%s) team %s shout %d\n", e->sid, e->identity, e->team[0] ? e->team : "-",
           (int)e->shout);
    break;
  case CHORUS_EVENT_KIND_PARTICIPANT_LEFT:
    printf("event participant_left %s %s\n", e->sid, e->text);
    break;
  case CHORUS_EVENT_KIND_SLOT:
    printf("event slot %u: %s\n", e->slot, e->sid[0] ? e->sid : "-");
    break;
  case CHORUS_EVENT_KIND_PARTICIPANT_UPDATED:
    printf("event participant_updated %s ptt %d deafened %d server_muted %d\n", e->sid, (int)e->ptt,
           (int)e->deafened, (int)e->server_muted);
    break;
  case CHORUS_EVENT_KIND_LEFT:
    printf("event left %s\n", e->text);
    break;
  case CHORUS_EVENT_KIND_ERROR:
    printf("event error %s %s\n", e->code[0] ? e->code : "-", e->text);
    break;
  default:
    break;
  }
  fflush(stdout);
  pthread_mutex_unlock(&s->lock);
}

/* The power of `freq` in `x` (Goertzel, Hann window), as a mean square. */
static double goertzel(const float *x, size_t n, double freq) {
  const double w = 2.0 * PI * freq / OUT_RATE;
  const double coeff = 2.0 * cos(w);
  double s1 = 0.0, s2 = 0.0, window_sum = 0.0;
  for (size_t i = 0; i < n; i++) {
    double h = 0.5 - 0.5 * cos(2.0 * PI * (double)i / (double)(n - 1));
    double s0 = h * x[i] + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
    window_sum += h;
  }
  double power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  /* A sine of amplitude A has mean square A^2/2 and a windowed DFT magnitude of A/2 * sum(h). */
  return 2.0 * power / (window_sum * window_sum);
}

int main(int argc, char **argv) {
  const char *program = argv[0];
  bool ptt = false, team = false, stereo = false;
  const char *whisper = NULL;
  while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
    if (strcmp(argv[1], "--ptt") == 0) {
      ptt = true;
    } else if (strcmp(argv[1], "--team") == 0) {
      team = true;
    } else if (strcmp(argv[1], "--stereo") == 0) {
      stereo = true;
    } else if (strcmp(argv[1], "--whisper") == 0 && argc > 2) {
      whisper = argv[2];
      argv++;
      argc--;
    } else {
      argc = 0; /* unknown: usage */
      break;
    }
    argv++;
    argc--;
  }
  if (argc < 7) {
    fprintf(stderr,
            "usage: %s [--ptt] [--team] [--whisper <identity>] [--stereo] <ws-url> <token> <room> <tone-hz> <seconds> "
            "<candidate-hz>...\n",
            program);
    return 2;
  }
  const char *url = argv[1], *token = argv[2], *room = argv[3];
  const double tone_hz = atof(argv[4]);
  const double seconds = atof(argv[5]);

  ChorusConfig config;
  ChorusError code = chorus_config_default(&config);
  if (code != CHORUS_ERROR_OK) return fail("chorus_config_default", code);
  config.input_rate_hz = IN_RATE;
  config.output_rate_hz = OUT_RATE;
  config.participant_output = false;
  const size_t channels = stereo ? 2 : 1;
  config.output_channels = (uint16_t)channels;
  config.name = "C example";
  ChorusClient *client = chorus_client_new(&config);
  if (!client) return fail("chorus_client_new", CHORUS_ERROR_OK);
  if (ptt && (code = chorus_client_set_ptt(client, true)) != CHORUS_ERROR_OK) return fail("chorus_client_set_ptt", code);
  /* Set before connecting: it goes out once joined. */
  if (team) {
    if ((code = chorus_client_talk_to_team(client)) != CHORUS_ERROR_OK) return fail("chorus_client_talk_to_team", code);
    printf("talk team\n");
  }
  static Session session; /* outlives the client: the callback's user pointer */
  memset(&session, 0, sizeof session);
  pthread_mutex_init(&session.lock, NULL);
  session.state = CHORUS_CONNECTION_STATE_CONNECTING;
  code = chorus_client_set_event_callback(client, on_event, &session);
  if (code != CHORUS_ERROR_OK) return fail("chorus_client_set_event_callback", code);
  code = chorus_client_connect(client, url, token, room);
  if (code != CHORUS_ERROR_OK) return fail("chorus_client_connect", code);

  double deadline = now_seconds() + 10.0;
  ChorusConnectionState state;
  while ((state = state_of(&session)) != CHORUS_CONNECTION_STATE_CONNECTED) {
    if (state == CHORUS_CONNECTION_STATE_CLOSED || now_seconds() > deadline) {
      fprintf(stderr, "media did not connect (state %d)\n", (int)state);
      return 1;
    }
    sleep_ms(5);
  }

  /* The game's audio callbacks, every 10 ms: push what is due of the tone, pull what is due of the mix. */
  size_t total = (size_t)(seconds * OUT_RATE);
  float *heard = calloc(total, sizeof(float));
  float *pull = calloc(OUT_RATE * channels, sizeof(float));
  int16_t *push = calloc(IN_RATE, sizeof(int16_t));
  if (!heard || !pull || !push) return 1;
  size_t pushed = 0, pulled = 0, got = 0;
  double side_energy[2] = {0.0, 0.0}; /* stereo: left and right over the second half */
  bool key_down = false, whispering = false;
  const double start = now_seconds();
  while (pulled < total) {
    double elapsed = now_seconds() - start;
    if (ptt && !key_down && elapsed >= seconds / 2) {
      if ((code = chorus_client_set_ptt_key(client, true)) != CHORUS_ERROR_OK) return fail("chorus_client_set_ptt_key", code);
      key_down = true;
      printf("ptt key down at %.2f s\n", elapsed);
    }
    if (whisper && !whispering && elapsed >= seconds / 2) {
      char sid[64];
      if (!sid_of(&session, whisper, sid)) {
        fprintf(stderr, "%s is not in the room\n", whisper);
        return 1;
      }
      const char *to[1] = {sid};
      if ((code = chorus_client_whisper(client, to, 1)) != CHORUS_ERROR_OK) return fail("chorus_client_whisper", code);
      whispering = true;
      printf("whisper %s %s at %.2f s\n", whisper, sid, elapsed);
    }
    size_t due_in = (size_t)(elapsed * IN_RATE);
    size_t n = due_in - pushed;
    if (n > IN_RATE) n = IN_RATE;
    for (size_t i = 0; i < n; i++) {
      push[i] = (int16_t)lrint(0.3 * 32767.0 * sin(2.0 * PI * tone_hz * (double)(pushed + i) / IN_RATE));
    }
    size_t taken = 0;
    code = chorus_client_push_pcm_i16(client, push, n, &taken);
    if (code != CHORUS_ERROR_OK) return fail("chorus_client_push_pcm_i16", code);
    pushed += n;

    size_t due_out = (size_t)(elapsed * OUT_RATE);
    if (due_out > total) due_out = total;
    size_t m = due_out - pulled;
    if (m > OUT_RATE) m = OUT_RATE;
    size_t filled = 0;
    /* Stereo: m frames of two interleaved samples; `filled` counts samples. */
    code = chorus_client_pull_mixed_f32(client, pull, m * channels, &filled);
    if (code != CHORUS_ERROR_OK) return fail("chorus_client_pull_mixed_f32", code);
    filled /= channels;
    for (size_t i = 0; i < m; i++) {
      if (!stereo) {
        heard[pulled + i] = pull[i];
        continue;
      }
      const float left = pull[2 * i], right = pull[2 * i + 1];
      heard[pulled + i] = 0.5f * (left + right);
      if (pulled + i >= total / 2) {
        side_energy[0] += (double)left * left;
        side_energy[1] += (double)right * right;
      }
    }
    pulled += m;
    got += filled;
    sleep_ms(10);
  }
  printf("pulled %zu samples, %zu from the network\n", pulled, got);
  if (stereo) {
    const double half = (double)(total - total / 2);
    printf("stereo left %.6f right %.6f\n", side_energy[0] / half, side_energy[1] / half);
  }

  /* Which candidates hold at least 5 % of the energy of the second half, block by block. */
  const float *tail = heard + total / 2;
  size_t blocks = (total - total / 2) / BLOCK;
  double energy = 0.0;
  for (size_t i = 0; i < blocks * BLOCK; i++) energy += (double)tail[i] * tail[i];
  energy /= (double)(blocks * BLOCK);
  for (int c = 6; c < argc; c++) {
    double freq = atof(argv[c]), power = 0.0;
    for (size_t b = 0; b < blocks; b++) power += goertzel(tail + b * BLOCK, BLOCK, freq);
    power /= (double)blocks;
    double fraction = energy > 0.0 ? power / energy : 0.0;
    if (energy > 1e-7 && fraction >= 0.05) printf("heard %.0f %.3f\n", freq, fraction);
  }

  ChorusStats stats;
  if ((code = chorus_client_stats(client, &stats)) != CHORUS_ERROR_OK) return fail("stats", code);
  printf("stats frames_sent %llu packets_received %llu mic_dropped %llu\n",
         (unsigned long long)stats.frames_sent, (unsigned long long)stats.packets_received,
         (unsigned long long)stats.mic_dropped);

  if ((code = chorus_client_leave(client)) != CHORUS_ERROR_OK) return fail("chorus_client_leave", code);
  deadline = now_seconds() + 5.0;
  while ((state = state_of(&session)) != CHORUS_CONNECTION_STATE_CLOSED && now_seconds() < deadline) {
    sleep_ms(5);
  }
  /* The callback is done once free returns. */
  chorus_client_free(client);
  printf("participants %d\n", session.participants);
  free(heard);
  free(pull);
  free(push);
  pthread_mutex_destroy(&session.lock);
  return state == CHORUS_CONNECTION_STATE_CLOSED ? 0 : 1;
}

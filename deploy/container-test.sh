#!/usr/bin/env bash
# Build and run the project's Dockerfile for real (issue 33; docs/deploy.md, "Tested in a container").
#
#   sudo bash deploy/container-test.sh        # as root: it starts its own dockerd
#
# No registry is reachable on the project's machines, so the pytorch/pytorch base is replaced by a stand-in built
# here: Debian bookworm from debootstrap, imported with `docker import`, plus the project's pinned torch 2.14.1 /
# torchvision 0.29.1 from the wheels pip takes from local disk (deploy/standin/Dockerfile). It is cached by name
# (with the hash of its Dockerfile) in the daemon's data root, so a second run reuses it.
#
# Network rules of these machines, kept here: dockerd runs with --bridge=none --iptables=false (no bridge network
# exists at all), every build, run and compose service uses the host's network, and everything listens on
# 127.0.0.1 only (ports 18461-18464).
#
# Prints one line per check ("ok" or "FAIL", seconds, details) and exits non-zero at the first failure, closing
# with "container-test: N passed, M failed"; the full log is $ADAIN_CT_DIR/container-test.log (default
# ~/adain-container). Containers, volumes and the daemon are removed or stopped on exit; the images (stand-in and
# project) stay in $ADAIN_CT_DIR/docker for the next run (rm -rf it to reclaim ~9 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CT_DIR=${ADAIN_CT_DIR:-$HOME/adain-container}   # scratch, outside git: rootfs, wheels, the daemon's data root
RUN_DIR=/run/adain-ct                            # the daemon's socket, pid file and exec root
DOCKER=/usr/bin/docker                           # Debian's client, of the same release as its dockerd
export DOCKER_HOST=unix://$RUN_DIR/docker.sock DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
ROOTFS_IMAGE=adain-standin-rootfs:bookworm
BASE_IMAGE=adain-standin-base:torch2.14.1-bookworm
PG_IMAGE=adain-standin-postgres:15-bookworm
IMAGE=adain-ct:default
IMAGE_NOFETCH=adain-ct:nofetch
PORT=18461            # the main container
PORT_RO=18462         # the read-only one
PG_PORT=18463         # PostgreSQL of the compose test
PORT_COMPOSE=18464    # the service of the compose test
PROJECT=adain-ct      # prefix of every container, volume and compose project made here
HOST=127.0.0.1

mkdir -p "$CT_DIR" "$RUN_DIR"
LOG=$CT_DIR/container-test.log
WORK=$(mktemp -d "$CT_DIR/run.XXXXXX")
: > "$LOG"
DOCKERD_PID=""
CHECK_PID=""
CURL_PIDS=()

log() { printf '%s\n' "$*" >> "$LOG"; }

# ---- clean-up ------------------------------------------------------------------------------------------------

remove_ours() {  # containers, compose project and volumes of this script (not images: they are the cache)
    for pid in "${CURL_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    CURL_PIDS=()
    [ -n "$DOCKERD_PID" ] || return 0
    if [ -f "$WORK/compose.env" ]; then
        docker-compose --env-file "$WORK/compose.env" -p "$PROJECT" -f "$REPO/deploy/compose.yaml" \
            down -v --timeout 40 >> "$LOG" 2>&1 || true
    fi
    local ids
    mapfile -t ids < <("$DOCKER" ps -aq --filter "name=^$PROJECT-" 2>/dev/null || true)
    [ "${#ids[@]}" = 0 ] || "$DOCKER" rm -f "${ids[@]}" >> "$LOG" 2>&1 || true
    mapfile -t ids < <("$DOCKER" volume ls -q --filter "name=^$PROJECT" 2>/dev/null || true)
    [ "${#ids[@]}" = 0 ] || "$DOCKER" volume rm -f "${ids[@]}" >> "$LOG" 2>&1 || true
    "$DOCKER" volume prune -f >> "$LOG" 2>&1 || true   # the anonymous volumes of `docker run --rm` runs
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$CHECK_PID" ]; then  # a check cut short (Ctrl-C): its children first, then itself
        local children
        mapfile -t children < <(ps -o pid= --ppid "$CHECK_PID")
        kill "${children[@]}" "$CHECK_PID" 2>/dev/null
        wait "$CHECK_PID" 2>/dev/null
    fi
    remove_ours
    if [ -n "$DOCKERD_PID" ]; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            log "dockerd $DOCKERD_PID did not stop in 30 s: SIGKILL"
            kill -KILL "$DOCKERD_PID" 2>/dev/null
        fi
        wait "$DOCKERD_PID" 2>/dev/null
        # dockerd leaves its default network namespace mounted in the exec root
        if mountpoint -q "$RUN_DIR/exec/netns/default"; then umount "$RUN_DIR/exec/netns/default"; fi
        log "dockerd $DOCKERD_PID stopped"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- one line per check --------------------------------------------------------------------------------------

CHECKS=0
detail() { printf '%s' "$*" > "$WORK/detail"; }

# check NAME FUNCTION [ARGS...]: runs FUNCTION with `set -e` in force (a subshell in the background: in an `if`
# or `||` bash would ignore set -e inside it), prints one line, stops the script at a failure.
check() {
    local name=$1 start=$SECONDS rc=0
    shift
    : > "$WORK/detail"
    log "==== $name"
    ( set -e; "$@" ) >> "$LOG" 2>&1 &
    CHECK_PID=$!
    wait "$CHECK_PID" || rc=$?
    CHECK_PID=""
    CHECKS=$((CHECKS + 1))
    if [ "$rc" = 0 ]; then
        printf 'ok    %-34s %5ss  %s\n' "$name" "$((SECONDS - start))" "$(cat "$WORK/detail")"
        return 0
    fi
    printf 'FAIL  %-34s %5ss  %s (exit %s; the end of %s:)\n' "$name" "$((SECONDS - start))" \
        "$(cat "$WORK/detail")" "$rc" "$LOG"
    tail -n 25 "$LOG" | sed 's/^/      | /'
    echo "container-test: $((CHECKS - 1)) passed, 1 failed"
    exit 1
}

fail() { detail "$*"; return 1; }

# ---- the daemon ----------------------------------------------------------------------------------------------

install_tools() {
    local missing=()
    [ -x /usr/sbin/dockerd ] && [ -x "$DOCKER" ] || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    detail "$("$DOCKER" --version); $(docker-compose --version)"
}

start_dockerd() {  # in the script's own shell (not a check's subshell), so that its pid is ours to stop
    if "$DOCKER" version >/dev/null 2>&1; then
        echo "FAIL  a daemon already answers on $DOCKER_HOST (left over from another run?): stop it first"
        exit 1
    fi
    # --bridge=none: no docker0 and no default bridge network; --iptables=false: no NAT rules.
    /usr/sbin/dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --data-root "$CT_DIR/docker" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
        --host "$DOCKER_HOST" >> "$CT_DIR/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
}

dockerd_up() {
    for _ in $(seq 120); do
        "$DOCKER" version >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited (see $CT_DIR/dockerd.log)"
        sleep 0.5
    done
    "$DOCKER" version >/dev/null
    local networks
    networks=$("$DOCKER" network ls --format '{{.Driver}}' | sort -u | tr '\n' ' ')
    case " $networks " in *" bridge "*) fail "a bridge network exists: $networks";; esac
    remove_ours  # what an interrupted earlier run may have left in the data root
    detail "dockerd pid $DOCKERD_PID, networks: $networks"
}

# ---- the stand-in base images --------------------------------------------------------------------------------

image_label() { "$DOCKER" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

rootfs_image() {
    if "$DOCKER" image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
        detail "$ROOTFS_IMAGE (cached)"
        return 0
    fi
    local rootfs=$CT_DIR/rootfs
    rm -rf "$rootfs"
    # The mirror apt uses here (bookworm is the release of these machines).
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$DOCKER" import -c 'ENV LANG=C.UTF-8' - "$ROOTFS_IMAGE"
    rm -rf "$rootfs"
    detail "$ROOTFS_IMAGE (debootstrap + docker import)"
}

pip_ca_bundle() {  # the CA bundle pip here is configured with: pip config list, else PIP_CERT, else Debian's
    local cert
    cert=$(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.cert='\(.*\)'$/\1/p" | head -n 1)
    printf '%s\n' "${cert:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"
}

standin_base() {
    local want ctx=$CT_DIR/standin-ctx
    want=$(sha256sum < "$REPO/deploy/standin/Dockerfile" | cut -c1-16)
    if [ "$(image_label "$BASE_IMAGE" adain.standin)" = "$want" ]; then
        detail "$BASE_IMAGE (cached), $("$DOCKER" run --rm --network host "$BASE_IMAGE" python -c \
            'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)')"
        return 0
    fi
    mkdir -p "$ctx/wheels"
    # pip here takes torch/torchvision (the CUDA build, with its nvidia-* wheels) from local disk: nothing of
    # CUDA is downloaded. The rest (small) comes from PyPI.
    python3 -m pip download --quiet --disable-pip-version-check -d "$ctx/wheels" torch==2.14.1 torchvision==0.29.1
    cp "$(pip_ca_bundle)" "$ctx/pip-ca.crt"
    cp "$REPO/deploy/standin/Dockerfile" "$ctx/Dockerfile"
    "$DOCKER" build --network host --progress plain --label "adain.standin=$want" \
        --build-arg "ROOTFS=$ROOTFS_IMAGE" -t "$BASE_IMAGE" "$ctx"
    rm -rf "$ctx"
    detail "$BASE_IMAGE built, $(size_of "$BASE_IMAGE")"
}

postgres_image() {
    local want
    want=$(cat "$REPO"/deploy/standin/postgres.Dockerfile "$REPO"/deploy/standin/postgres-entrypoint.sh \
        | sha256sum | cut -c1-16)
    if [ "$(image_label "$PG_IMAGE" adain.standin)" = "$want" ]; then
        detail "$PG_IMAGE (cached)"
        return 0
    fi
    "$DOCKER" build --network host --progress plain --label "adain.standin=$want" \
        --build-arg "ROOTFS=$ROOTFS_IMAGE" -f "$REPO/deploy/standin/postgres.Dockerfile" -t "$PG_IMAGE" \
        "$REPO/deploy/standin"
    detail "$PG_IMAGE built (Debian's postgresql-15), $(size_of "$PG_IMAGE")"
}

# ---- helpers -------------------------------------------------------------------------------------------------

size_of() {  # "6.18 GB (+112 MB over the base)" for an image built on $BASE_IMAGE, else just the size
    local size base
    size=$("$DOCKER" image inspect -f '{{.Size}}' "$1")
    base=$("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE" 2>/dev/null || echo 0)
    if [ "$1" != "$BASE_IMAGE" ] && [ "$base" -gt 0 ] && [ "$size" -gt "$base" ]; then
        awk -v s="$size" -v b="$base" 'BEGIN { printf "%.2f GB (+%d MB over the stand-in base)", s / 1e9, (s - b) / 1e6 }'
    else
        awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }'
    fi
}

port_free() {
    if ss -Hltn "sport = :$1" | grep -q .; then
        fail "port $1 is in use on this machine"
    fi
}

wait_ready() {  # wait_ready PORT CONTAINER [SECONDS]: /readyz answers 200 "ready"
    local port=$1 name=$2 limit=${3:-240} body
    for _ in $(seq "$limit"); do
        body=$(curl -s --max-time 2 "http://$HOST:$port/readyz" || true)
        case $body in *'"status":"ready"'*) printf '%s\n' "$body" > "$WORK/readyz"; return 0;; esac
        [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$name")" = true ] \
            || { "$DOCKER" logs --tail 30 "$name"; fail "$name exited before /readyz was ready"; }
        sleep 1
    done
    "$DOCKER" logs --tail 30 "$name"
    fail "$name: /readyz not ready after ${limit} s (last: ${body:-no answer})"
}

make_image() {  # make_image KIND W H SEED FILE: a PNG made by the image's own Pillow (nothing from outside)
    "$DOCKER" run --rm --network host "$IMAGE" python -c '
import io, sys
import numpy as np
from PIL import Image
kind, w, h, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
y, x = np.mgrid[0:h, 0:w].astype(np.float32)
if kind == "content":  # smooth gradients and a few discs: something with shapes to keep
    img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 17 + y / 29)], -1)
    for cx, cy, r in rng.uniform(0, 1, (5, 3)):
        img[(x - cx * w) ** 2 + (y - cy * h) ** 2 < (r * h / 4) ** 2] = rng.uniform(0, 1, 3)
else:  # strokes of random colours: a texture
    freq = rng.uniform(0.05, 0.3, 3)
    img = 0.5 + 0.5 * np.stack([np.sin(freq[i] * x + freq[(i + 1) % 3] * y * (i + 1)) for i in range(3)], -1)
    img += rng.normal(0, 0.15, img.shape)
buf = io.BytesIO()
Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
sys.stdout.buffer.write(buf.getvalue())' "$1" "$2" "$3" "$4" > "$5"
}

png_size() {  # "WxH" of a PNG file, or nothing when it is none
    python3 -c '
import struct, sys
data = open(sys.argv[1], "rb").read(24)
if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
    print("%dx%d" % struct.unpack(">II", data[16:24]))' "$1"
}

stylize() {  # stylize PORT OUT SIZE [curl form args...]: POST /v1/stylize of the content at SIZE (shorter side)
    local port=$1 out=$2 size=$3
    shift 3
    curl -s --max-time 120 -o "$out" -w '%{http_code} %{content_type}' \
        -F "content=@$WORK/content.png;type=image/png" -F "content_size=$size" -F "style_size=$size" "$@" \
        "http://$HOST:$port/v1/stylize"
}

run_service() {  # run_service NAME PORT [docker run args...]: the image as docs/deploy.md runs it, on 127.0.0.1
    local name=$1 port=$2
    shift 2
    "$DOCKER" run -d --name "$name" --network host --stop-timeout 40 \
        -e ADAIN_HOST=$HOST -e ADAIN_PORT="$port" "$@"
}

# ---- the checks ----------------------------------------------------------------------------------------------

build_default() {
    local t0=$SECONDS
    "$DOCKER" build --network host --progress plain --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$REPO"
    local took=$((SECONDS - t0)) cached
    cached=$("$DOCKER" run --rm --network host "$IMAGE" sh -c 'ls /var/cache/adain/vgg16-hed/')
    case $cached in *encoder.safetensors*) ;; *) fail "no encoder baked into /var/cache/adain: $cached";; esac
    detail "$(size_of "$IMAGE"), encoder baked in, build ${took} s"
}

build_nofetch() {
    "$DOCKER" build --network host --progress plain --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg FETCH_WEIGHTS=0 -t "$IMAGE_NOFETCH" "$REPO"
    local cached
    cached=$("$DOCKER" run --rm --network host "$IMAGE_NOFETCH" sh -c 'ls -A /var/cache/adain')
    [ -z "$cached" ] || fail "FETCH_WEIGHTS=0 still left files in /var/cache/adain: $cached"
    detail "$(size_of "$IMAGE_NOFETCH"), /var/cache/adain empty"
}

start_main() {
    port_free "$PORT"
    run_service "$PROJECT-main" "$PORT" -v "$PROJECT-cache:/var/cache/adain" -v "$PROJECT-data:/var/lib/adain" \
        "$IMAGE"
    wait_ready "$PORT" "$PROJECT-main"
    local user uid
    user=$("$DOCKER" inspect -f '{{.Config.User}}' "$PROJECT-main")
    uid=$("$DOCKER" exec "$PROJECT-main" grep '^Uid:' /proc/1/status | cut -f2)
    [ "$uid" = 10001 ] || fail "PID 1 runs as uid $uid, not the image's adain (10001)"
    detail "USER $user, PID 1 ($("$DOCKER" exec "$PROJECT-main" cat /proc/1/cmdline | tr '\0' ' ')) uid $uid"
}

readyz() {
    local body
    body=$(curl -s --max-time 5 "http://$HOST:$PORT/readyz")
    case $body in *'"status":"ready"'*'"store":"ok"'*) ;; *) fail "readyz: $body";; esac
    detail "$body"
}

stylize_two_styles() {
    make_image content 384 256 1 "$WORK/content.png"
    make_image style 300 300 2 "$WORK/style1.png"
    make_image style 256 320 3 "$WORK/style2.png"
    local got size
    got=$(stylize "$PORT" "$WORK/out.png" 256 -F "style=@$WORK/style1.png;type=image/png" \
        -F "style=@$WORK/style2.png;type=image/png" -F "weights=0.7,0.3")
    [ "$got" = "200 image/png" ] || { cat "$WORK/out.png"; fail "stylize answered $got"; }
    size=$(png_size "$WORK/out.png")
    [ "$size" = 384x256 ] || fail "the result is no 384x256 PNG: '${size}'"
    # The blend is used: other weights give another image.
    got=$(stylize "$PORT" "$WORK/out2.png" 256 -F "style=@$WORK/style1.png;type=image/png" \
        -F "style=@$WORK/style2.png;type=image/png" -F "weights=0.1,0.9")
    [ "$got" = "200 image/png" ] || fail "stylize (weights 0.1,0.9) answered $got"
    cmp -s "$WORK/out.png" "$WORK/out2.png" && fail "weights 0.7,0.3 and 0.1,0.9 gave the same image"
    detail "content 384x256 + 2 styles, weights 0.7,0.3: 200 image/png $size ($(stat -c %s "$WORK/out.png") bytes)"
}

healthcheck() {
    local status
    for _ in $(seq 160); do
        status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$PROJECT-main")
        [ "$status" = healthy ] && break
        [ "$status" != unhealthy ] || fail "health: unhealthy"
        sleep 1
    done
    [ "$status" = healthy ] || fail "health still '$status' after 160 s"
    detail "docker inspect: $status ($("$DOCKER" inspect -f '{{len .State.Health.Log}}' "$PROJECT-main") probe(s), \
last exit $("$DOCKER" inspect -f '{{(index .State.Health.Log 0).ExitCode}}' "$PROJECT-main"))"
}

style_survives_restart() {
    local id got
    id=$(curl -s --max-time 60 -F "image=@$WORK/style1.png;type=image/png" -F name=ct-style \
        "http://$HOST:$PORT/v1/styles" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    [ -n "$id" ] || fail "POST /v1/styles gave no id"
    "$DOCKER" stop "$PROJECT-main"
    "$DOCKER" start "$PROJECT-main"
    wait_ready "$PORT" "$PROJECT-main"
    got=$(curl -s --max-time 10 -o "$WORK/style.json" -w '%{http_code}' "http://$HOST:$PORT/v1/styles/$id")
    [ "$got" = 200 ] || fail "GET /v1/styles/$id after the restart: $got $(cat "$WORK/style.json")"
    got=$(stylize "$PORT" "$WORK/out3.png" 256 -F "style_id=$id")
    [ "$got" = "200 image/png" ] || fail "stylize with style_id=$id after the restart: $got"
    detail "style $id stored, container stopped and started, GET 200 and stylize with it 200"
}

stop_drains() {
    # Six requests at 256 px at once, then docker stop while they run. The service may refuse some of them at
    # once (503 overloaded: it sheds work it could not finish within 80 % of the 60 s deadline, as its cost
    # model estimates, counting each batch full); those are answered before the stop and not in flight. Every
    # request in flight at the stop must be answered with its image; any other ending fails the check.
    local n=6 i start stopped took code done_at after=0 shed=0
    local form=(-F "style=@$WORK/style1.png;type=image/png" -F "style=@$WORK/style2.png;type=image/png"
                -F "weights=0.5,0.5")
    # Two requests of this size first: the service sheds requests of sizes it has not timed yet while its
    # queue is busy, and the first run of a new size is slower than the later ones.
    for i in 1 2; do
        code=$(stylize "$PORT" "$WORK/warm.png" 256 "${form[@]}")
        [ "$code" = "200 image/png" ] || fail "warm-up request $i answered $code: $(head -c 300 "$WORK/warm.png")"
    done
    for i in $(seq "$n"); do
        ( rc=0
          stylize "$PORT" "$WORK/drain$i.png" 256 "${form[@]}" > "$WORK/drain$i.code" || rc=$?
          echo "$rc" > "$WORK/drain$i.rc"
          date +%s.%N > "$WORK/drain$i.done" ) &
        CURL_PIDS+=($!)
    done
    # In flight: admitted requests wait in the worker's queue (adain_queue_depth) and hold their images' memory
    # (adain_work_bytes) until they are answered.
    local metrics="" queued=""
    for _ in $(seq 100); do
        metrics=$(curl -s --max-time 2 "http://$HOST:$PORT/metrics" || true)
        queued=$(grep '^adain_queue_depth{.*} [2-9]' <<< "$metrics" || true)
        [ -z "$queued" ] || break
        sleep 0.1
    done
    grep -E '^adain_(queue_depth|work_bytes)' <<< "$metrics" || true
    [ -n "$queued" ] || fail "no queue of requests formed (adain_queue_depth)"
    sleep 0.5  # all six small uploads are in by now (loopback)
    start=$(date +%s.%N)
    "$DOCKER" stop "$PROJECT-main"   # SIGTERM, SIGKILL after the container's --stop-timeout (40 s)
    stopped=$(date +%s.%N)
    took=$(awk -v a="$start" -v b="$stopped" 'BEGIN { printf "%.1f", b - a }')
    wait "${CURL_PIDS[@]}" || true
    CURL_PIDS=()
    local bad=()
    for i in $(seq "$n"); do
        code=$(cat "$WORK/drain$i.code" 2>/dev/null || true)
        done_at=$(cat "$WORK/drain$i.done")
        log "request $i: curl exit $(cat "$WORK/drain$i.rc"), '$code' at $done_at (stop sent at $start)" \
            "$(head -c 300 "$WORK/drain$i.png" 2>/dev/null | tr -cd '[:print:]' | grep -v PNG || true)"
        if awk -v d="$done_at" -v s="$start" 'BEGIN { exit !(d > s) }'; then  # in flight at the stop
            if [ "$code" = "200 image/png" ] && [ "$(png_size "$WORK/drain$i.png")" = 384x256 ]; then
                after=$((after + 1))
            else
                bad+=("$i: '$code'")
            fi
        elif [ "$code" = "503 application/json" ] && grep -q '"overloaded"' "$WORK/drain$i.png"; then
            shed=$((shed + 1))
        elif [ "$code" != "200 image/png" ]; then
            bad+=("$i: '$code' before the stop")
        fi
    done
    local exit_code
    exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$PROJECT-main")
    "$DOCKER" logs --tail 15 "$PROJECT-main"
    [ "${#bad[@]}" = 0 ] || fail "requests cut off or failed: ${bad[*]}"
    [ "$after" -ge 2 ] || fail "only $after request(s) were in flight at the stop: nothing much was drained"
    [ "$exit_code" = 0 ] || fail "exit code $exit_code (137: killed at --stop-timeout)"
    awk -v t="$took" 'BEGIN { exit !(t < 40) }' || fail "docker stop took $took s"
    detail "$after in flight at SIGTERM, all answered 200 with their image ($shed of $n shed as overloaded \
before it); docker stop took $took s (--stop-timeout 40), exit code 0"
}

read_only_rootfs() {
    port_free "$PORT_RO"
    run_service "$PROJECT-ro" "$PORT_RO" --read-only --tmpfs /tmp \
        -v "$PROJECT-cache:/var/cache/adain" -v "$PROJECT-data:/var/lib/adain" "$IMAGE"
    wait_ready "$PORT_RO" "$PROJECT-ro"
    if "$DOCKER" exec "$PROJECT-ro" sh -c 'touch /app/x' 2>/dev/null; then
        fail "the root file system is writable"
    fi
    local got
    got=$(stylize "$PORT_RO" "$WORK/out4.png" 256 -F "style=@$WORK/style1.png;type=image/png" \
        -F "style=@$WORK/style2.png;type=image/png" -F "weights=0.7,0.3")
    [ "$got" = "200 image/png" ] || fail "stylize on the read-only container: $got"
    got=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -F "image=@$WORK/style2.png;type=image/png" \
        "http://$HOST:$PORT_RO/v1/styles")
    [ "$got" = 201 ] || fail "POST /v1/styles on the read-only container: $got"
    "$DOCKER" stop "$PROJECT-ro"
    detail "--read-only --tmpfs /tmp + the two volumes: ready, stylize 200, style stored 201, / not writable"
}

compose_postgres() {
    port_free "$PG_PORT"
    port_free "$PORT_COMPOSE"
    local password
    password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat > "$WORK/compose.env" <<EOF
ADAIN_IMAGE=$IMAGE
POSTGRES_IMAGE=$PG_IMAGE
ADAIN_PG_PASSWORD=$password
ADAIN_PG_HOST=$HOST
ADAIN_PG_PORT=$PG_PORT
ADAIN_HOST=$HOST
ADAIN_PORT=$PORT_COMPOSE
EOF
    local compose=(docker-compose --env-file "$WORK/compose.env" -p "$PROJECT" -f "$REPO/deploy/compose.yaml")
    "${compose[@]}" up -d
    local service
    service=$("${compose[@]}" ps -q adain)
    wait_ready "$PORT_COMPOSE" "$service"
    local db
    db=$("$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$service" | sed -n 's/^ADAIN_DB=\([a-z]*\):.*/\1/p')
    [ "$db" = postgresql ] || fail "the service's ADAIN_DB is $db"
    local id got
    id=$(curl -s --max-time 60 -F "image=@$WORK/style1.png;type=image/png" -F name=compose-style \
        "http://$HOST:$PORT_COMPOSE/v1/styles" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    [ -n "$id" ] || fail "POST /v1/styles gave no id"
    "${compose[@]}" restart adain
    wait_ready "$PORT_COMPOSE" "$service"
    got=$(curl -s --max-time 10 -o "$WORK/style.json" -w '%{http_code}' "http://$HOST:$PORT_COMPOSE/v1/styles/$id")
    [ "$got" = 200 ] || fail "GET /v1/styles/$id after restarting the service: $got $(cat "$WORK/style.json")"
    got=$(stylize "$PORT_COMPOSE" "$WORK/out5.png" 256 -F "style_id=$id")
    [ "$got" = "200 image/png" ] || fail "stylize with style_id=$id after the restart: $got"
    # The row is in PostgreSQL itself, not in a file of the service container.
    local rows
    rows=$("${compose[@]}" exec -T postgres psql -p "$PG_PORT" -U adain -d adain -tAc \
        "SELECT count(*) FROM styles WHERE id = '$id'")
    [ "${rows//[^0-9]/}" = 1 ] || fail "style $id is not in PostgreSQL's styles table: '$rows'"
    "${compose[@]}" down -v --timeout 40
    rm -f "$WORK/compose.env"
    detail "postgres + adain (network_mode: host): style $id stored, service restarted, GET 200, stylize 200"
}

# ---- run -----------------------------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || { echo "deploy/container-test.sh starts dockerd: run it as root" >&2; exit 2; }
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -)
[ -z "$(git -C "$REPO" status --porcelain 2>/dev/null)" ] || COMMIT="$COMMIT + uncommitted changes"
echo "container test: $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- \
    | sed 's/^ *//') x $(nproc), commit $COMMIT"
T0=$SECONDS
check "tools" install_tools
start_dockerd
check "dockerd (no bridge, no iptables)" dockerd_up
check "stand-in rootfs" rootfs_image
check "stand-in base (torch)" standin_base
check "1 build (default args)" build_default
check "1 build (FETCH_WEIGHTS=0)" build_nofetch
check "2 non-root user" start_main
check "2 /readyz ready" readyz
check "2 stylize, 2 weighted styles" stylize_two_styles
check "2 HEALTHCHECK healthy" healthcheck
check "3 stored style survives restart" style_survives_restart
check "3 docker stop drains requests" stop_drains
check "4 read-only root filesystem" read_only_rootfs
check "5 stand-in PostgreSQL image" postgres_image
check "5 compose with PostgreSQL" compose_postgres
echo "all $CHECKS checks passed in $((SECONDS - T0)) s"
echo "container-test: $CHECKS passed, 0 failed"

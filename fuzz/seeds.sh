#!/usr/bin/env bash
# Writes a small seed corpus for the wav_repair target into fuzz/corpus/wav_repair (gitignored).
# The target builds files from our own header by itself; these seeds give its raw-bytes mode
# valid WAV files of other shapes (other fmt chunks, extra chunks) to mutate, which
# libFuzzer would otherwise take long to assemble byte by byte.
set -euo pipefail

out="$(cd "$(dirname "$0")" && pwd)/corpus/wav_repair"
mkdir -p "$out"

# le VALUE BYTES: VALUE as BYTES little-endian bytes.
le() {
    local i
    for ((i = 0; i < $2; i++)); do
        printf "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"
    done
}

# fmt_chunk SIZE TAG CHANNELS BYTES_PER_SAMPLE: the chunk header and its first 16 bytes; the
# caller appends SIZE - 16 more bytes.
fmt_chunk() {
    local size=$1 tag=$2 channels=$3 bytes=$4 rate=48000
    printf 'fmt '; le "$size" 4
    le "$tag" 2; le "$channels" 2; le "$rate" 4
    le $((rate * channels * bytes)) 4; le $((channels * bytes)) 2; le $((bytes * 8)) 2
}

# seed NAME: the input prefix that selects raw mode (5 bytes of fallback format, then an odd
# byte for the raw-bytes branch, see build_file), then the file from stdin.
seed() {
    { printf '\0\0\0\0\0\1'; cat; } >"$out/seed-$1"
}

data() { printf 'data'; le "$1" 4; head -c "$2" /dev/urandom; }

# Plain PCM, a stale data size and a torn last block.
{ printf 'RIFF'; le 36 4; printf 'WAVE'; fmt_chunk 16 1 1 2; data 0 9; } | seed pcm16
# IEEE float stereo with the 18-byte fmt chunk.
{ printf 'RIFF'; le 74 4; printf 'WAVE'; fmt_chunk 18 3 2 4; le 0 2; data 32 32; } | seed float18
# WAVE_FORMAT_EXTENSIBLE, six channels of s16 (KSDATAFORMAT_SUBTYPE_PCM).
{
    printf 'RIFF'; le 60 4; printf 'WAVE'; fmt_chunk 40 65534 6 2
    le 22 2; le 16 2; le 63 4; le 1 2
    printf '\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71'
    data 24 30
} | seed extensible
# A LIST chunk and a fact chunk before the data.
{
    printf 'RIFF'; le 62 4; printf 'WAVE'; fmt_chunk 16 1 2 2
    printf 'LIST'; le 4 4; printf 'abcd'; printf 'fact'; le 4 4; le 2 4
    data 8 8
} | seed chunks
echo "wrote $(ls "$out" | wc -l) files to $out"

// Classifies float32 clips with transformers.js's pipeline("audio-classification") on a local exported folder, offline.
//   node classify.mjs <model folder> <dtype: fp32 | q8> <clip.f32>...
// Prints one line per clip: <clip path>\t<top-1 label>\t<score>. Clips are raw little-endian float32 samples at the
// model's sampling rate: Node transformers.js cannot decode FLAC, so the caller decodes.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { env, pipeline } from '@huggingface/transformers';

const [folder, dtype, ...clips] = process.argv.slice(2);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(folder));
const classifier = await pipeline('audio-classification', path.basename(folder), { dtype });
for (const clip of clips) {
    const bytes = readFileSync(clip);
    const audio = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const [best] = await classifier(audio, { top_k: 1 });
    console.log(`${clip}\t${best.label}\t${best.score}`);
}

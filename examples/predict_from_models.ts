/**
 * Loading a trained model from models/ and predicting with it: the GQA transformer
 * trained by `tfjs-attention train` on the `reverse` task reads 8 symbols (ids 2..11)
 * and writes them reversed, position by position.
 *
 *   npx ts-node examples/predict_from_models.ts
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {loadModel} from '../src/node';
import {readTrainingRecord} from '../src/train';
import {runAsProgram} from './run';

export async function main(log: (line: string) => void = console.log,
                           inputs: number[][] = [[2, 3, 4, 5, 6, 7, 8, 9],
                             [11, 2, 11, 5, 5, 3, 10, 4]]): Promise<{outputs: number[][]}> {
  const dir = path.join(__dirname, '..', 'models', 'gqa');
  const record = readTrainingRecord(dir); // the task and model options it was trained with
  const model = await loadModel(dir);
  const L = record.model.seqLength;
  const outputs = tf.tidy(() => {
    const probs = model.predict(tf.tensor2d(inputs, [inputs.length, L], 'int32')) as tf.Tensor; // [n, L, vocab]
    return tf.argMax(probs, -1).arraySync() as number[][];
  });
  inputs.forEach((x, i) => log(`${record.task.name}: ${x.join(' ')} -> ${outputs[i].join(' ')}`));
  model.dispose();
  return {outputs};
}

if (require.main === module) runAsProgram(() => main());

/** tfjs' layer argument types under short names, for the layers of this folder. */
import * as tf from '@tensorflow/tfjs';

/** The arguments of tfjs' Layer constructor (name, trainable, inputShape, ...). */
export type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;

/** The keyword arguments of apply / call: tfjs' own Kwargs type, `{[key: string]: any}`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Kwargs = {[key: string]: any};

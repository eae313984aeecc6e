/**
 * Initializers, regularizers and constraints given by name or instance, and their
 * Keras-style `{className, config}` serialization, resolved through tfjs' own
 * serialization registry (tfjs-layers keeps its `getInitializer` helpers private).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';

export type InitializerIdentifier = keyof typeof tf.initializers;
export type RegularizerIdentifier = keyof typeof tf.regularizers;
export type ConstraintIdentifier = keyof typeof tf.constraints;

type Initializer = ReturnType<typeof tf.initializers.zeros>;
type Regularizer = ReturnType<typeof tf.regularizers.l2>;
type Constraint = ReturnType<typeof tf.constraints.nonNeg>;

/** A serialized object as tfjs and Keras write it. */
export interface SerializedObject {
  className: string;
  config: tf.serialization.ConfigDict;
}

export type InitializerArg = InitializerIdentifier | Initializer | SerializedObject;
export type RegularizerArg = RegularizerIdentifier | Regularizer | SerializedObject;
export type ConstraintArg = ConstraintIdentifier | Constraint | SerializedObject;

function fromRegistry<T>(what: string, obj: SerializedObject): T {
  const entry = tf.serialization.SerializationMap.getMap().classNameMap[obj.className];
  if (entry == null) {
    throw new AttentionError('INVALID_CONFIG', `unknown ${what} class ${show(obj.className)}`);
  }
  const [cls, fromConfig] = entry;
  return fromConfig(cls, obj.config ?? {}) as unknown as T;
}

function resolve<T>(what: string, value: unknown, factories: Record<string, (a: never) => unknown>): T {
  if (typeof value === 'string') {
    const factory = factories[value];
    if (factory == null) {
      throw new AttentionError('INVALID_CONFIG',
        `${what} must be one of ${Object.keys(factories).join(', ')} or an instance, received ${show(value)}`);
    }
    return factory({} as never) as T;
  }
  if (value != null && typeof value === 'object') {
    const v = value as Partial<SerializedObject> & {getClassName?: unknown};
    if (typeof v.getClassName === 'function') return value as T;
    if (typeof v.className === 'string') return fromRegistry<T>(what, v as SerializedObject);
  }
  throw new AttentionError('INVALID_CONFIG', `${what} must be a name or an instance, received ${show(value)}`);
}

export function getInitializer(value: InitializerArg): Initializer {
  return resolve<Initializer>('initializer', value, tf.initializers as never);
}

export function getRegularizer(value: RegularizerArg | null | undefined): Regularizer | null {
  return value == null ? null : resolve<Regularizer>('regularizer', value, tf.regularizers as never);
}

export function getConstraint(value: ConstraintArg | null | undefined): Constraint | null {
  return value == null ? null : resolve<Constraint>('constraint', value, tf.constraints as never);
}

/** `{className, config}` for an initializer, regularizer or constraint; null stays null. */
export function serializeObject(obj: tf.serialization.Serializable | null): SerializedObject | null {
  return obj == null ? null : {className: obj.getClassName(), config: obj.getConfig()};
}

// A web app that loads saved models by class name: registerAttentionLayers keeps every class.
import {registerAttentionLayers} from 'tfjs-attention';

registerAttentionLayers();

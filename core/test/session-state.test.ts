import test from 'ava';
import { SessionState, createSessionSlot } from '../src/index.js';

test('each slot holds its own value, even when two providers pick the same name', (t) => {
  const mine = createSessionSlot<{ count: number }>('failures');
  const theirs = createSessionSlot<string>('failures');
  const state = new SessionState();
  state.set(mine, { count: 1 });
  t.false(state.has(theirs), 'a slot of another provider is not filled by mine');
  state.set(theirs, 'x');
  t.deepEqual(state.get(mine), { count: 1 });
  t.is(state.get(theirs), 'x');
  t.true(state.delete(mine));
  t.is(state.get(mine), undefined);
  t.false(state.delete(mine), 'deleting twice reports nothing was there');
  t.is(state.get(theirs), 'x');
});

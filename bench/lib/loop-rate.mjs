// Our own clients' rates: an operation run back to back by `workers` loops for a time budget,
// after a short warm-up (so V8 has compiled the path), in operations per second.

/**
 * @param {() => Promise<unknown>} operation
 * @param {{ seconds: number, workers?: number, perOperation?: number }} options
 *   perOperation: how many measured operations one call stands for (e.g. two round trips)
 */
export async function loopRate(operation, { seconds, workers = 1, perOperation = 1 }) {
  const run = async (budgetMs) => {
    let done = 0;
    const deadline = performance.now() + budgetMs;
    const loop = async () => {
      while (performance.now() < deadline) {
        await operation();
        done += perOperation;
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: workers }, loop));
    return (done * 1000) / (performance.now() - started);
  };
  await run(Math.min(500, (seconds * 1000) / 4));
  return run(seconds * 1000);
}

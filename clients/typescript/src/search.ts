/** AuthZEN search results: an async iterator over every result, page after page. */
import type { ActionObject, Entity, SearchPage, SkippedAction } from './types.js';

/** Fetches one page: the first (no token) or the one a token names. */
export type PageFetcher<T> = (token: string | undefined, requestId: string, seenTokens: ReadonlySet<string>) => Promise<SearchPage<T>>;

/**
 * The results of a search. Iterate it with `for await`: it asks Mandate for
 * the first page, yields its results, and follows `page.next_token` until
 * the last page. Each iteration runs the search anew; the pages are asked
 * one at a time, as the results are consumed.
 *
 * Each page is one call, with its own deadline and its own retry; a failed
 * page makes the iteration throw the typed error.
 */
export class SearchResults<T> implements AsyncIterable<T> {
  /** The number of results Mandate reported in the last page read (`page.total`). */
  total: number | undefined;
  /** How many pages the last (or current) iteration has read. */
  pagesRead = 0;

  readonly #fetch: PageFetcher<T>;
  readonly #newRequestId: () => string;

  /** @internal */
  constructor(fetch: PageFetcher<T>, newRequestId: () => string) {
    this.#fetch = fetch;
    this.#newRequestId = newRequestId;
  }

  /** The pages, one at a time, each with its results, token and counts. */
  async *pages(): AsyncGenerator<SearchPage<T>, void, undefined> {
    const requestId = this.#newRequestId();
    const seen = new Set<string>();
    let token: string | undefined;
    this.pagesRead = 0;
    this.total = undefined;
    this.startRun();
    for (;;) {
      const page = await this.#fetch(token, requestId, seen);
      this.pagesRead += 1;
      this.total = page.total;
      this.onPage(page);
      yield page;
      if (page.nextToken === '') return;
      seen.add(page.nextToken);
      token = page.nextToken;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for await (const page of this.pages()) {
      yield* page.results;
    }
  }

  /** Every result, all pages read. */
  async toArray(): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this) all.push(item);
    return all;
  }

  /** @internal */
  protected startRun(): void {}

  /** @internal */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  protected onPage(_page: SearchPage<T>): void {}
}

/** Subjects or resources found. */
export type EntitySearchResults = SearchResults<Entity>;

/**
 * The actions found by an action search, and the ones Mandate skipped for
 * lack of context (`context.skipped`): an action whose schema requires a
 * context attribute the request did not give cannot be decided, and is
 * named here rather than silently left out.
 */
export class ActionSearchResults extends SearchResults<ActionObject> {
  /**
   * The actions the server skipped for lack of context, gathered from the
   * pages read so far (each name once). Complete once the iteration ends;
   * empty before the first page.
   */
  skipped: SkippedAction[] = [];

  protected override startRun(): void {
    this.skipped = [];
  }

  protected override onPage(page: SearchPage<ActionObject>): void {
    for (const entry of page.skipped) {
      if (!this.skipped.some((known) => known.name === entry.name)) this.skipped.push(entry);
    }
  }
}

"""Page-like load on a web view: N WebSocket clients that receive everything the server pushes.

  python -m fer_ros.web.clients http://127.0.0.1:8080/ 20

Each client does what the page does on the wire (fetch the page, open /ws, ask for the models,
read every message); it draws nothing, so the load measured is the server's, not a browser's.
Commands on stdin, one per line: ``open`` connects the N clients and answers ``open N`` once all
are connected; ``close`` disconnects them and answers one JSON line with what each received. End
of input closes and exits. Opening and closing the same process again and again lets a benchmark
alternate between N clients and none without a process start in between.
"""

import asyncio
import json
import sys

import aiohttp


async def one_client(session: aiohttp.ClientSession, url: str, counts: dict, connected) -> None:
    """Fetch the page, open its WebSocket, ask for the models and count what arrives until it closes."""
    async with session.get(url) as response:
        await response.read()
    async with session.ws_connect(url + 'ws') as ws:
        await ws.send_str(json.dumps({'type': 'list_models', 'id': 1}))
        connected(ws)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                counts['texts'] += 1
            elif message.type == aiohttp.WSMsgType.BINARY:
                counts['images'] += 1


class Clients:
    """``count`` page-like clients of ``url``, opened and closed together."""

    def __init__(self, session: aiohttp.ClientSession, url: str, count: int):
        self._session, self._url, self._count = session, url, count
        self._tasks, self._sockets, self._counts = [], [], []

    async def open(self) -> None:
        """Connect all clients; the first failure is raised."""
        self._counts = [{'texts': 0, 'images': 0} for _ in range(self._count)]
        self._sockets = []
        all_connected = asyncio.Event()

        def connected(ws) -> None:
            self._sockets.append(ws)
            if len(self._sockets) == self._count:
                all_connected.set()

        self._tasks = [asyncio.create_task(one_client(self._session, self._url, counts, connected))
                       for counts in self._counts]
        waiter = asyncio.create_task(all_connected.wait())
        done, _ = await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # a client ended before all were connected: its error
            waiter.cancel()
            for task in done:
                task.result()
            raise ConnectionError('the server closed a client before all were connected')

    async def close(self) -> list[dict]:
        """Disconnect all clients; what each received."""
        for ws in self._sockets:
            await ws.close()
        await asyncio.gather(*self._tasks)
        return self._counts


async def serve_commands(url: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        clients, is_open = Clients(session, url, count), False
        while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if command == 'open' and not is_open:
                await clients.open()
                is_open = True
                print(f'open {count}', flush=True)
            elif command == 'close' and is_open:
                print(json.dumps(await clients.close()), flush=True)
                is_open = False
            else:
                print(f'error: {command!r} (commands: open, close; open only when closed and back)', flush=True)
        if is_open:
            await clients.close()


def main(argv=None) -> int:
    url, count = (argv or sys.argv[1:])[:2]
    asyncio.run(serve_commands(url if url.endswith('/') else url + '/', int(count)))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

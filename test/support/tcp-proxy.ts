// The TCP proxy lives with the soak benchmark, which cuts links too.
export { TcpProxy } from "../../bench/tcp-proxy.js";

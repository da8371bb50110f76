package dogbreed.mms;

import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpMessage;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMessage;
import io.netty.handler.codec.http.HttpObjectAggregator;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.util.CharsetUtil;
import io.netty.util.ReferenceCountUtil;

/**
 * netty's request aggregator, answering a body past the limit with a JSON 413 instead of an empty one.
 *
 * <p>The limit is the configured payload maximum itself, so the JVM never holds more of a request than
 * the server accepts: a larger body is refused as soon as its Content-Length (or its growing content)
 * passes the limit, and the rest of it is discarded unread.
 */
public class BoundedAggregator extends HttpObjectAggregator {

    private final int limit;

    public BoundedAggregator(int limit) {
        super(limit);
        this.limit = limit;
    }

    private FullHttpResponse tooLarge() {
        String body =
                "{\"code\": 413, \"type\": \"PayloadTooLarge\", \"message\": \"request body is over the maximum of "
                        + limit
                        + " bytes\"}";
        FullHttpResponse response =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE,
                        Unpooled.copiedBuffer(body, CharsetUtil.UTF_8));
        response.headers().set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
        HttpUtil.setContentLength(response, response.content().readableBytes());
        return response;
    }

    @Override
    protected Object newContinueResponse(HttpMessage start, int maxContentLength, ChannelPipeline pipeline) {
        Object response = super.newContinueResponse(start, maxContentLength, pipeline);
        if (response instanceof FullHttpResponse
                && ((FullHttpResponse) response).status().code() == 413) {
            ReferenceCountUtil.release(response);
            return tooLarge();
        }
        return response;
    }

    @Override
    protected void handleOversizedMessage(ChannelHandlerContext ctx, HttpMessage oversized) {
        FullHttpResponse response = tooLarge();
        if (oversized instanceof FullHttpMessage) {
            response.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
            ctx.writeAndFlush(response).addListener(ChannelFutureListener.CLOSE);
            return;
        }
        // The rest of the body is read and discarded, not held, so a client still sending it gets to read this
        // answer instead of a reset connection; one that asked to close the connection closes it after.
        if (!HttpUtil.isKeepAlive(oversized)) {
            response.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
        }
        ctx.writeAndFlush(response).addListener(ChannelFutureListener.CLOSE_ON_FAILURE);
    }
}
